// A chat playground that streams through the instance's real public endpoint with a di_ token.
import { useEffect, useRef, useState } from 'preact/hooks';
import { api, describeError } from './api.js';
import { html } from './html.js';
import { Link } from './router.js';
import { getPlaygroundToken, setPlaygroundToken } from './session.js';
import { streamChat } from './sse.js';
import { desiredSpec } from './ui.js';

function randomSuffix() {
  return [...crypto.getRandomValues(new Uint8Array(3))].map((b) => b.toString(16).padStart(2, '0')).join('');
}

function statsLine(stats) {
  if (!stats) return '';
  const seconds = stats.totalMs / 1000;
  const tokens = stats.usage?.completion_tokens;
  const parts = [`Answered in ${seconds.toFixed(2)} s`];
  if (stats.firstTokenMs !== null) parts.push(`first token after ${Math.round(stats.firstTokenMs)} ms`);
  if (tokens !== undefined) parts.push(`${tokens} tokens (${(tokens / Math.max(seconds, 0.001)).toFixed(1)} tokens/s)`);
  if (stats.finishReason) parts.push(`finish reason ${stats.finishReason}`);
  return `${parts.join(', ')}.`;
}

export function Playground({ instance }) {
  const endpoint = instance.endpoints?.public_endpoint_fqdn;
  const models = [...new Set(desiredSpec(instance).model_deployments.map((d) => d.model_slug))];
  const [token, setToken] = useState(() => getPlaygroundToken(instance.id)?.value ?? '');
  const [tokenNote, setTokenNote] = useState(() => {
    const saved = getPlaygroundToken(instance.id);
    return saved?.name ? `Using token ${saved.name}, kept in this tab only.` : '';
  });
  const [model, setModel] = useState(models[0] ?? '');
  const [maxTokens, setMaxTokens] = useState('128');
  const [temperature, setTemperature] = useState('0.7');
  const [system, setSystem] = useState('');
  const [messages, setMessages] = useState([]);
  const [draft, setDraft] = useState('');
  const [partial, setPartial] = useState(null);
  const [stats, setStats] = useState(null);
  const [error, setError] = useState(null);
  const [creating, setCreating] = useState(false);
  const abort = useRef(null);
  const log = useRef();
  const input = useRef();

  useEffect(() => () => abort.current?.abort(), []);
  useEffect(() => {
    if (log.current) log.current.scrollTop = log.current.scrollHeight;
  }, [messages, partial]);

  if (!endpoint) {
    return html`<section class="card" aria-labelledby="playground-title">
      <h2 id="playground-title">Playground</h2>
      <p class="notice" role="status">The playground needs the instance's <strong>public endpoint</strong>, which is disabled.
        Turn it on in <${Link} to=${`/instances/${instance.id}/settings`}>Settings<//>, or call the private endpoint from
        your own code (Overview has snippets).</p>
    </section>`;
  }

  const changeToken = (event) => {
    const value = event.currentTarget.value.trim();
    setToken(value);
    setPlaygroundToken(instance.id, value ? { value } : null);
    setTokenNote('');
  };

  const createToken = async () => {
    setCreating(true);
    setError(null);
    try {
      const created = await api.createToken(instance.id, `playground-${randomSuffix()}`);
      setPlaygroundToken(instance.id, { value: created.value, id: created.id, name: created.name });
      setToken(created.value);
      setTokenNote(`Created token ${created.name} for the playground. Its value is kept in this tab only; revoke it in Tokens.`);
      input.current?.focus();
    } catch (err) {
      setError(describeError(err));
    } finally {
      setCreating(false);
    }
  };

  const send = async (event) => {
    event?.preventDefault();
    const text = draft.trim();
    if (!text || partial !== null) return;
    if (!token.startsWith('di_')) {
      setError('Paste an access token of this instance (di_…) or create a playground token first.');
      return;
    }
    setError(null);
    setStats(null);
    const history = [...messages, { role: 'user', content: text }];
    setMessages(history);
    setDraft('');
    setPartial('');
    const controller = new AbortController();
    abort.current = controller;
    let answer = '';
    try {
      const result = await streamChat({
        endpoint,
        token,
        signal: controller.signal,
        body: {
          model,
          messages: [...(system.trim() ? [{ role: 'system', content: system.trim() }] : []), ...history],
          max_tokens: Number(maxTokens) || 128,
          temperature: Number(temperature),
        },
        onText: (piece) => {
          answer += piece;
          setPartial(answer);
        },
      });
      setMessages([...history, { role: 'assistant', content: answer }]);
      setStats(result);
    } catch (err) {
      if (err.name === 'AbortError') {
        setMessages([...history, { role: 'assistant', content: answer, stopped: true }]);
      } else {
        if (answer) setMessages([...history, { role: 'assistant', content: answer, stopped: true }]);
        setError(err.message);
      }
    } finally {
      abort.current = null;
      setPartial(null);
      input.current?.focus();
    }
  };

  const onKeyDown = (event) => {
    if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) send(event);
  };

  const streaming = partial !== null;
  return html`<section class="card stack" aria-labelledby="playground-title">
    <h2 id="playground-title">Playground</h2>
    <p class="hint">Chats with <code class="wrap">${endpoint}/v1/chat/completions</code> straight from your browser, streaming,
      as any OpenAI client would.</p>
    <div class="field">
      <label for="playground-token">Access token (di_…)</label>
      <div class="input-row">
        <input id="playground-token" type="password" autocomplete="off" spellcheck="false" class="mono" placeholder="di_…"
          aria-describedby="playground-token-hint" value=${token} onInput=${changeToken} />
        <button type="button" class="button secondary" onClick=${createToken} disabled=${creating}>
          ${creating ? 'Creating…' : 'Create a playground token'}
        </button>
      </div>
      <p id="playground-token-hint" class="hint" role="status">${tokenNote || 'Paste a token of this instance, or create one.'}</p>
    </div>
    <div class="grid settings-row">
      <div class="field">
        <label for="playground-model">Model</label>
        <select id="playground-model" value=${model} onChange=${(e) => setModel(e.currentTarget.value)}>
          ${models.map((m) => html`<option key=${m} value=${m}>${m}</option>`)}
        </select>
      </div>
      <div class="field">
        <label for="playground-max-tokens">Max tokens</label>
        <input id="playground-max-tokens" type="number" min="1" max="4096" inputmode="numeric" value=${maxTokens}
          onInput=${(e) => setMaxTokens(e.currentTarget.value)} />
      </div>
      <div class="field">
        <label for="playground-temperature">Temperature</label>
        <input id="playground-temperature" type="number" min="0" max="2" step="0.1" inputmode="decimal" value=${temperature}
          onInput=${(e) => setTemperature(e.currentTarget.value)} />
      </div>
    </div>
    <details>
      <summary>System prompt</summary>
      <div class="field">
        <label for="playground-system">System prompt (optional)</label>
        <textarea id="playground-system" rows="2" value=${system} onInput=${(e) => setSystem(e.currentTarget.value)}></textarea>
      </div>
    </details>
    <div class="chat-log" ref=${log} id="chat-log" role="log" aria-live="polite" aria-busy=${streaming ? 'true' : 'false'}
      aria-label="Conversation" tabindex="0">
      ${messages.length === 0 && !streaming ? html`<p class="muted">No messages yet. Ask something below.</p>` : null}
      ${messages.map(
        (m, index) => html`<div class="message ${m.role}" key=${index}>
          <span class="who">${m.role === 'user' ? 'You' : 'Model'}</span>
          <p class="text">${m.content}${m.stopped ? html` <em class="muted">(stopped)</em>` : null}</p>
        </div>`,
      )}
      ${streaming
        ? html`<div class="message assistant streaming">
            <span class="who">Model</span>
            <p class="text" id="streaming-answer">${partial}<span class="cursor" aria-hidden="true"></span></p>
          </div>`
        : null}
    </div>
    <p class="muted small" role="status" id="playground-status">${streaming ? 'Streaming the answer…' : statsLine(stats)}</p>
    ${error ? html`<p class="error" role="alert">${error}</p>` : null}
    <form class="composer" onSubmit=${send}>
      <div class="field">
        <label for="playground-message">Message</label>
        <textarea id="playground-message" ref=${input} rows="3" aria-describedby="playground-message-hint" value=${draft}
          onInput=${(e) => setDraft(e.currentTarget.value)} onKeyDown=${onKeyDown}></textarea>
        <p id="playground-message-hint" class="hint">Enter sends; Shift+Enter starts a new line.</p>
      </div>
      <div class="actions">
        <button type="button" class="button secondary" disabled=${streaming || messages.length === 0}
          onClick=${() => { setMessages([]); setStats(null); setError(null); }}>Clear</button>
        ${streaming
          ? html`<button type="button" class="button secondary" onClick=${() => abort.current?.abort()}>Stop</button>`
          : null}
        <button type="submit" class="button primary" disabled=${streaming || !draft.trim()}>Send</button>
      </div>
    </form>
  </section>`;
}
