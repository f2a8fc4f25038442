// Small shared pieces: polling, status badges, copy buttons, errors, confirmation dialogs.
import { useEffect, useId, useRef, useState } from 'preact/hooks';
import { describeError } from './api.js';
import { html } from './html.js';

/**
 * Load now, then every intervalMs (after each answer, so slow answers never pile up), skipping
 * the loads while the browser tab is hidden: polls count against the token's API rate limit.
 * Returns {data, error, loading, refresh}; data keeps its last value through errors.
 */
export function usePoll(load, intervalMs, deps = []) {
  const [state, setState] = useState({ data: undefined, error: null, loading: true });
  const [tick, setTick] = useState(0);
  const loadRef = useRef(load);
  loadRef.current = load;
  const depsKey = JSON.stringify(deps);
  const lastKey = useRef(depsKey);
  useEffect(() => {
    if (lastKey.current !== depsKey) {
      lastKey.current = depsKey;
      setState({ data: undefined, error: null, loading: true });
    }
    let stopped = false;
    let loaded = false;
    let timer;
    const run = async () => {
      if (document.hidden && loaded) {
        timer = setTimeout(run, intervalMs || 1000);
        return;
      }
      try {
        const data = await loadRef.current();
        loaded = true;
        if (!stopped) setState({ data, error: null, loading: false });
      } catch (error) {
        if (!stopped) setState((previous) => ({ data: previous.data, error, loading: false }));
      }
      if (!stopped && intervalMs) timer = setTimeout(run, intervalMs);
    };
    run();
    const onVisible = () => {
      if (!document.hidden && loaded && intervalMs) {
        clearTimeout(timer);
        run();
      }
    };
    document.addEventListener('visibilitychange', onVisible);
    return () => {
      document.removeEventListener('visibilitychange', onVisible);
      stopped = true;
      clearTimeout(timer);
    };
  }, [depsKey, tick, intervalMs]);
  return { ...state, refresh: () => setTick((t) => t + 1) };
}

const STATUS_TEXT = {
  active: 'active',
  new: 'new',
  provisioning: 'provisioning',
  updating: 'updating',
  deleting: 'deleting',
  error: 'error',
};

/** A status as a word in a coloured pill (the colour only repeats what the word says). */
export function StatusBadge({ status }) {
  const known = STATUS_TEXT[status] ? status : 'unknown';
  const busy = ['new', 'provisioning', 'updating', 'deleting'].includes(status);
  return html`<span class="badge status-${known}" data-status=${status}>
    <span class="dot${busy ? ' pulse' : ''}" aria-hidden="true"></span>${status}
  </span>`;
}

/** A button that copies text; "what" names it for screen readers ("Copy public endpoint"). */
export function CopyButton({ text, what, label = 'Copy' }) {
  const [note, setNote] = useState('');
  const timer = useRef();
  useEffect(() => () => clearTimeout(timer.current), []);
  const copy = async () => {
    try {
      await navigator.clipboard.writeText(text);
      setNote(`Copied ${what}`);
    } catch {
      setNote('Could not copy: select the text and copy it by hand');
    }
    clearTimeout(timer.current);
    timer.current = setTimeout(() => setNote(''), 2500);
  };
  return html`<button type="button" class="button secondary small" onClick=${copy} aria-label=${`Copy ${what}`}>
      ${note.startsWith('Copied') ? 'Copied' : label}
    </button><span class="visually-hidden" role="status">${note}</span>`;
}

/** An error as one line, announced to screen readers. */
export function ErrorMessage({ error, prefix }) {
  if (!error) return null;
  return html`<p class="error" role="alert">${prefix ? `${prefix}: ` : ''}${describeError(error)}</p>`;
}

/** A modal confirmation built on <dialog> (focus kept inside, Escape cancels). */
export function ConfirmDialog({ open, title, children, confirmLabel, onConfirm, onCancel, canConfirm = true, busy = false }) {
  const ref = useRef();
  const titleId = useId();
  useEffect(() => {
    const dialog = ref.current;
    if (!dialog) return;
    if (open && !dialog.open) dialog.showModal();
    if (!open && dialog.open) dialog.close();
  }, [open]);
  const submit = (event) => {
    event.preventDefault();
    if (canConfirm && !busy) onConfirm();
  };
  const cancel = (event) => {
    event.preventDefault();
    onCancel();
  };
  return html`<dialog ref=${ref} aria-labelledby=${titleId} onCancel=${cancel}>
    <form onSubmit=${submit}>
      <h2 id=${titleId}>${title}</h2>
      ${open ? children : null}
      <div class="actions">
        <button type="button" class="button secondary" autofocus onClick=${onCancel}>Cancel</button>
        <button type="submit" class="button danger" disabled=${!canConfirm || busy}>${busy ? 'Working…' : confirmLabel}</button>
      </div>
    </form>
  </dialog>`;
}

export function Time({ value }) {
  if (!value) return null;
  const date = new Date(value);
  return html`<time datetime=${value} title=${value}>${date.toLocaleString()}</time>`;
}

/** "cpu-slot-2gb × 2" for each accelerator of each model deployment of a spec. */
export function acceleratorSummary(spec) {
  return (spec?.model_deployments ?? [])
    .flatMap((d) => d.accelerators ?? [])
    .map((a) => `${a.accelerator_slug} × ${a.scale}`)
    .join(', ');
}

export function modelSummary(spec) {
  return (spec?.model_deployments ?? []).map((d) => d.model_slug).join(', ');
}

const SETTLED = new Set(['active', 'error']);

/** How often to poll an instance: often while it changes, less once it has settled. */
export function pollInterval(statuses) {
  return statuses.every((s) => SETTLED.has(s)) ? 5000 : 2000;
}

/** The spec the instance is heading to: the pending deployment's, else the live one. */
export function desiredSpec(instance) {
  return instance.pending_deployment_spec ?? instance.spec;
}
