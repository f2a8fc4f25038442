// Change an instance (PATCH: name, scale, public endpoint, Hugging Face token) or delete it.
import { useEffect, useState } from 'preact/hooks';
import { api, describeError } from './api.js';
import { html } from './html.js';
import { navigate } from './router.js';
import { ConfirmDialog, ErrorMessage, desiredSpec } from './ui.js';

const NAME_PATTERN = '^[a-zA-Z0-9_\\-]+$';

function formFrom(spec) {
  return {
    name: spec.name,
    isPublic: spec.enable_public_endpoint,
    scales: spec.model_deployments.map((d) => d.accelerators.map((a) => String(a.scale))),
    hfToken: '',
  };
}

export function Settings({ instance, onChanged }) {
  const spec = desiredSpec(instance);
  const [form, setForm] = useState(() => formFrom(spec));
  const [gated, setGated] = useState(new Set());
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState(null);
  const [notice, setNotice] = useState('');
  const [deleting, setDeleting] = useState(false);
  const [confirmName, setConfirmName] = useState('');
  const [deleteError, setDeleteError] = useState(null);
  const locked = instance.status === 'deleting';

  useEffect(() => {
    api
      .gpuModelConfig()
      .then((c) => setGated(new Set(c.gpu_model_configs.filter((m) => m.is_gated_model).map((m) => m.model_slug))))
      .catch(() => setGated(new Set()));
  }, []);

  const needsHf = spec.model_deployments.some((d) => gated.has(d.model_slug));

  /** A change to the form: what was said about the last save no longer applies. */
  const edit = (changes) => {
    setNotice('');
    setError(null);
    setForm((f) => ({ ...f, ...changes }));
  };

  const setScale = (i, j) => (event) => {
    const value = event.currentTarget.value;
    edit({ scales: form.scales.map((row, a) => (a === i ? row.map((v, b) => (b === j ? value : v)) : row)) });
  };

  const save = async (event) => {
    event.preventDefault();
    setError(null);
    setNotice('');
    const patch = {};
    if (form.name.trim() !== spec.name) patch.name = form.name.trim();
    if (form.isPublic !== spec.enable_public_endpoint) patch.enable_public_endpoint = form.isPublic;
    const scalesChanged = spec.model_deployments.some((d, i) => d.accelerators.some((a, j) => Number(form.scales[i][j]) !== a.scale));
    if (scalesChanged) {
      patch.model_deployments = spec.model_deployments.map((d, i) => ({
        model_id: d.model_id,
        model_slug: d.model_slug,
        model_provider: d.model_provider,
        workload_config: d.workload_config ?? {},
        accelerators: d.accelerators.map((a, j) => ({ accelerator_slug: a.accelerator_slug, scale: Number(form.scales[i][j]), type: a.type })),
      }));
    }
    const body = {};
    if (Object.keys(patch).length) body.spec = patch;
    if (form.hfToken.trim()) body.access_tokens = { hugging_face_token: form.hfToken.trim() };
    if (!Object.keys(body).length) {
      setNotice('Nothing to change: the form matches the current spec.');
      return;
    }
    setBusy(true);
    try {
      const updated = await api.updateInstance(instance.id, body);
      const next = desiredSpec(updated);
      setForm(formFrom(next));
      setNotice(
        body.spec
          ? `Update accepted: version ${next.version} is rolling out (${updated.status}); the current replicas serve until it is ready.`
          : 'Hugging Face token updated.',
      );
      onChanged();
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  };

  const remove = async () => {
    setBusy(true);
    setDeleteError(null);
    try {
      await api.deleteInstance(instance.id);
      navigate('/', { flash: `Deleting ${spec.name}: it disappears from the list once its replicas are stopped.` });
    } catch (err) {
      setDeleteError(err);
      setBusy(false);
    }
  };

  return html`<div class="stack">
    <section class="card" aria-labelledby="update-title">
      <h2 id="update-title">Scale and update</h2>
      ${locked ? html`<p class="notice">This instance is being deleted; it cannot be changed.</p>` : null}
      <form class="stack" onSubmit=${save}>
        <fieldset disabled=${locked || busy} class="stack">
          <legend class="visually-hidden">Instance settings</legend>
          <div class="grid two">
            <div class="field">
              <label for="update-name">Name</label>
              <input id="update-name" name="name" required maxlength="255" pattern=${NAME_PATTERN} autocomplete="off"
                value=${form.name} onInput=${(e) => edit({ name: e.currentTarget.value })} />
            </div>
            ${spec.model_deployments.map((d, i) =>
              d.accelerators.map(
                (a, j) => html`<div class="field" key=${`${i}-${j}`}>
                  <label for=${`update-scale-${i}-${j}`}>Scale of ${d.model_slug} on ${a.accelerator_slug}</label>
                  <input id=${`update-scale-${i}-${j}`} name="scale" type="number" inputmode="numeric" min="1" max="1000" step="1"
                    required value=${form.scales[i]?.[j] ?? a.scale} onInput=${setScale(i, j)} />
                </div>`,
              ),
            )}
          </div>
          <div class="field checkbox">
            <input id="update-public" type="checkbox" checked=${form.isPublic}
              onChange=${(e) => edit({ isPublic: e.currentTarget.checked })} />
            <label for="update-public">Public endpoint</label>
          </div>
          ${needsHf
            ? html`<div class="field">
                <label for="update-hf-token">New Hugging Face token (optional)</label>
                <input id="update-hf-token" type="password" autocomplete="off" value=${form.hfToken}
                  onInput=${(e) => edit({ hfToken: e.currentTarget.value })} />
              </div>`
            : null}
          <div class="actions">
            <button type="submit" class="button primary">${busy ? 'Saving…' : 'Save changes'}</button>
          </div>
        </fieldset>
      </form>
      ${notice ? html`<p class="notice" role="status" id="update-notice">${notice}</p>` : null}
      <${ErrorMessage} error=${error} prefix="Update refused" />
    </section>
    <section class="card danger-zone" aria-labelledby="delete-title">
      <h2 id="delete-title">Delete</h2>
      <p>Stops every replica and removes the instance, its endpoints and its tokens.</p>
      <button type="button" class="button danger" disabled=${locked}
        onClick=${() => {
          setConfirmName('');
          setDeleteError(null);
          setDeleting(true);
        }}>Delete instance…</button>
    </section>
    <${ConfirmDialog} open=${deleting} title=${`Delete ${spec.name}?`} confirmLabel="Delete instance"
      canConfirm=${confirmName === spec.name} busy=${busy} onConfirm=${remove} onCancel=${() => setDeleting(false)}>
      <p>This cannot be undone. Type the instance's name, <strong>${spec.name}</strong>, to confirm.</p>
      <div class="field">
        <label for="delete-confirm">Instance name</label>
        <input id="delete-confirm" autocomplete="off" spellcheck="false" autofocus value=${confirmName}
          onInput=${(e) => setConfirmName(e.currentTarget.value)} />
      </div>
      ${deleteError ? html`<p class="error" role="alert">${describeError(deleteError)}</p>` : null}
    </${ConfirmDialog}>
  </div>`;
}
