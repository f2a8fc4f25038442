// An instance's data-plane tokens: list, create (value shown once), revoke.
import { useEffect, useRef, useState } from 'preact/hooks';
import { api, describeError } from './api.js';
import { html } from './html.js';
import { forgetPlaygroundToken, getPlaygroundToken, setPlaygroundToken } from './session.js';
import { ConfirmDialog, CopyButton, ErrorMessage, Time, usePoll } from './ui.js';

const NAME_PATTERN = '^[a-zA-Z0-9_\\-]+$';

export function TokensPanel({ instance }) {
  const { data: tokens, error, refresh } = usePoll(() => api.tokens(instance.id), 0, [instance.id]);
  const [name, setName] = useState('');
  const [busy, setBusy] = useState(false);
  const [actionError, setActionError] = useState(null);
  const [created, setCreated] = useState(null);
  const [revoking, setRevoking] = useState(null);
  const [notice, setNotice] = useState('');
  const [playgroundId, setPlaygroundId] = useState(() => getPlaygroundToken(instance.id)?.id ?? null);
  const createdBox = useRef();

  useEffect(() => {
    if (created) createdBox.current?.focus();
  }, [created]);

  const create = async (event) => {
    event.preventDefault();
    setActionError(null);
    setNotice('');
    setBusy(true);
    try {
      const token = await api.createToken(instance.id, name.trim());
      setCreated(token);
      setName('');
      refresh();
    } catch (err) {
      setActionError(err);
    } finally {
      setBusy(false);
    }
  };

  const revoke = async () => {
    setBusy(true);
    setActionError(null);
    try {
      await api.revokeToken(instance.id, revoking.id);
      forgetPlaygroundToken(instance.id, revoking.id);
      if (playgroundId === revoking.id) setPlaygroundId(null);
      if (created?.id === revoking.id) setCreated(null);
      setNotice(`Token ${revoking.name} revoked: the endpoints refuse it from now on.`);
      setRevoking(null);
      refresh();
    } catch (err) {
      setActionError(err);
    } finally {
      setBusy(false);
    }
  };

  const usePlayground = () => {
    setPlaygroundToken(instance.id, { value: created.value, id: created.id, name: created.name });
    setPlaygroundId(created.id);
    setNotice(`The playground of this tab now uses ${created.name}.`);
  };

  return html`<div class="stack">
    <section class="card" aria-labelledby="token-create-title">
      <h2 id="token-create-title">Create an access token</h2>
      <p class="hint">Access tokens (<code>di_…</code>) authenticate requests to this instance's endpoints. A token's value is shown
        once, when it is created; inferd keeps only its hash.</p>
      <form class="inline-form" onSubmit=${create}>
        <div class="field">
          <label for="token-name">Token name</label>
          <input id="token-name" name="name" required maxlength="255" pattern=${NAME_PATTERN} autocomplete="off"
            aria-describedby="token-name-hint" value=${name} onInput=${(e) => setName(e.currentTarget.value)} />
          <p id="token-name-hint" class="hint">Letters, digits, - and _.</p>
        </div>
        <button type="submit" class="button primary" disabled=${busy}>Create token</button>
      </form>
      ${created
        ? html`<div class="created-token" tabindex="-1" ref=${createdBox} role="group" aria-labelledby="created-token-title">
            <p id="created-token-title"><strong>Token ${created.name} created.</strong> Copy its value now: it will not be shown again.</p>
            <div class="input-row">
              <label class="visually-hidden" for="new-token-value">Value of token ${created.name}</label>
              <input id="new-token-value" readonly class="mono" value=${created.value} />
              <${CopyButton} text=${created.value} what="token value" />
            </div>
            <div class="actions">
              <button type="button" class="button secondary small" onClick=${usePlayground}>Use in the playground</button>
              <button type="button" class="button secondary small" onClick=${() => setCreated(null)}>I have saved it, hide it</button>
            </div>
          </div>`
        : null}
      ${notice ? html`<p class="notice" role="status">${notice}</p>` : null}
      <${ErrorMessage} error=${actionError} />
    </section>
    <section class="card" aria-labelledby="token-list-title">
      <h2 id="token-list-title">Tokens</h2>
      <${ErrorMessage} error=${error} prefix="Could not load the tokens" />
      ${tokens && tokens.length === 0 ? html`<p class="muted">This instance has no access token.</p>` : null}
      ${tokens && tokens.length > 0
        ? html`<table class="table responsive" id="token-table">
            <caption class="visually-hidden">Access tokens of this instance</caption>
            <thead><tr><th scope="col">Name</th><th scope="col">Created</th><th scope="col">Id</th><th scope="col"><span class="visually-hidden">Actions</span></th></tr></thead>
            <tbody>
              ${tokens.map(
                (t) => html`<tr key=${t.id} data-token-id=${t.id}>
                  <th scope="row" data-label="Name">${t.name}${t.id === playgroundId ? html` <span class="tag">playground</span>` : null}</th>
                  <td data-label="Created"><${Time} value=${t.created_at} /></td>
                  <td data-label="Id"><code class="wrap small">${t.id}</code></td>
                  <td data-label="Actions">
                    <button type="button" class="button danger-outline small" aria-label=${`Revoke ${t.name}`}
                      onClick=${() => setRevoking(t)}>Revoke</button>
                  </td>
                </tr>`,
              )}
            </tbody>
          </table>`
        : null}
    </section>
    <${ConfirmDialog} open=${revoking !== null} title=${`Revoke token ${revoking?.name ?? ''}?`} confirmLabel="Revoke token"
      busy=${busy} onConfirm=${revoke} onCancel=${() => setRevoking(null)}>
      <p>Requests with this token are refused within about a second. This cannot be undone.</p>
      ${actionError ? html`<p class="error" role="alert">${describeError(actionError)}</p>` : null}
    </${ConfirmDialog}>
  </div>`;
}
