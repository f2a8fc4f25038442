// Sign in with a control-plane token: checked against the API, then kept in sessionStorage.
import { useEffect, useRef, useState } from 'preact/hooks';
import { api, ApiError, describeError } from './api.js';
import { html } from './html.js';
import { setToken } from './session.js';

const TOKEN_SHAPE = /^do[op]_v1_[0-9a-f]{64}$/;

export function SignIn({ onSignedIn, notice }) {
  const [value, setValue] = useState('');
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  const input = useRef();
  useEffect(() => input.current?.focus(), []);

  const submit = async (event) => {
    event.preventDefault();
    const token = value.trim();
    setError(null);
    if (!TOKEN_SHAPE.test(token)) {
      setError('That is not a control-plane token: they look like dop_v1_ followed by 64 hexadecimal digits.');
      input.current?.focus();
      return;
    }
    setBusy(true);
    try {
      await api.checkToken(token);
      setToken(token);
      onSignedIn();
    } catch (err) {
      setBusy(false);
      if (err instanceof ApiError && err.status === 401) setError('The API refused this token (401): it is unknown, revoked or mistyped.');
      else if (err instanceof ApiError && err.status === 403) setError('This token lacks the dedicated_inference:read scope the console needs.');
      else setError(describeError(err));
      input.current?.focus();
    }
  };

  return html`<main id="main" class="signin">
    <h1><span class="brand-mark" aria-hidden="true"></span> inferd console</h1>
    <p>Sign in with a control-plane token of your team (<code>dop_v1_…</code>). You see and manage only that team's
      Dedicated Inference instances.</p>
    ${notice ? html`<p class="notice" role="status">${notice}</p>` : null}
    <form class="card stack" onSubmit=${submit} novalidate>
      <div class="field">
        <label for="signin-token">API token</label>
        <input id="signin-token" ref=${input} type="password" name="token" autocomplete="off" spellcheck="false"
          required placeholder="dop_v1_…" aria-describedby="signin-token-hint${error ? ' signin-error' : ''}"
          aria-invalid=${error ? 'true' : 'false'}
          value=${value} onInput=${(e) => setValue(e.currentTarget.value)} />
        <p id="signin-token-hint" class="hint">Kept in this browser tab only (sessionStorage) and sent only to this
          server's API. <code>inferd serve</code> prints the first admin
          token; <code>inferd admin token create</code> makes more.</p>
      </div>
      ${error ? html`<p id="signin-error" class="error" role="alert">${error}</p>` : null}
      <div class="actions"><button type="submit" class="button primary" disabled=${busy}>${busy ? 'Checking…' : 'Sign in'}</button></div>
    </form>
  </main>`;
}
