// Small shared pieces: polling, status badges, copy buttons, errors, confirmation dialogs.
import { useEffect, useId, useRef, useState } from 'preact/hooks';
import { ApiError, describeError, onRateLimited, rateLimitedUntil } from './api.js';
import { html } from './html.js';
import { nextPollDelay } from './polling.js';

/**
 * Load now, then again some time after each answer (so slow answers never pile up): interval is
 * milliseconds, or a function (data, error) => milliseconds of the last answer; 0 loads once.
 * Nothing is loaded while the browser tab is hidden (the poll resumes, if due, when it is shown)
 * nor while the API's rate limit refuses the token (after a 429 it resumes when the limit
 * lifts): every poll counts against the token's API budget. A 429 is not an error here (the app
 * shows one notice for it). Returns {data, error, loading, refresh}; data keeps its last value
 * through errors; refresh() loads now.
 */
export function usePoll(load, interval, deps = []) {
  const [state, setState] = useState({ data: undefined, error: null, loading: true });
  const [tick, setTick] = useState(0);
  const loadRef = useRef(load);
  loadRef.current = load;
  const intervalRef = useRef(interval);
  intervalRef.current = interval;
  const reschedule = useRef(() => {});
  const depsKey = JSON.stringify(deps);
  const lastKey = useRef(depsKey);
  useEffect(() => {
    if (lastKey.current !== depsKey) {
      lastKey.current = depsKey;
      setState({ data: undefined, error: null, loading: true });
    }
    let stopped = false;
    let loaded = false;
    let busy = false;
    let limited = false;
    let lastDone = null;
    let last = { data: undefined, error: null };
    let timer;
    const schedule = () => {
      clearTimeout(timer);
      if (stopped || busy || (document.hidden && loaded)) return; // hidden: visibilitychange resumes
      const every = typeof intervalRef.current === 'function' ? intervalRef.current(last.data, last.error) : intervalRef.current;
      if (!every && !limited && lastDone !== null) return; // loads once: done
      // refused with 429: again as soon as the limit lifts (what it shows is out of date by then)
      const delay = nextPollDelay({ lastDoneMs: lastDone, intervalMs: limited ? 0 : every, limitedUntilMs: rateLimitedUntil(), nowMs: Date.now() });
      timer = setTimeout(run, delay);
    };
    const run = async () => {
      if (stopped || busy || (document.hidden && loaded)) return;
      if (rateLimitedUntil() > Date.now()) {
        schedule();
        return;
      }
      busy = true;
      try {
        const data = await loadRef.current();
        loaded = true;
        limited = false;
        last = { data, error: null };
        if (!stopped) setState({ data, error: null, loading: false });
      } catch (error) {
        limited = error instanceof ApiError && error.status === 429;
        const shown = limited ? null : error;
        last = { data: last.data, error: shown };
        if (!stopped) setState((previous) => ({ data: previous.data, error: shown, loading: false }));
      } finally {
        busy = false;
        lastDone = Date.now();
      }
      schedule();
    };
    run();
    const onVisibility = () => {
      if (!document.hidden) schedule();
    };
    document.addEventListener('visibilitychange', onVisibility);
    reschedule.current = schedule;
    return () => {
      document.removeEventListener('visibilitychange', onVisibility);
      stopped = true;
      clearTimeout(timer);
      reschedule.current = () => {};
    };
  }, [depsKey, tick]);
  // A new interval (the instance started changing) applies from the last answer, not after the old one.
  const intervalKey = typeof interval === 'function' ? 'function' : interval;
  useEffect(() => reschedule.current(), [intervalKey]);
  return { ...state, refresh: () => setTick((t) => t + 1) };
}

/** One notice while the API's rate limit refuses this token (429), instead of an error per poll. */
export function RateLimitNotice() {
  const [until, setUntil] = useState(rateLimitedUntil);
  useEffect(() => onRateLimited(setUntil), []);
  useEffect(() => {
    const left = until - Date.now();
    if (left <= 0) return undefined;
    const timer = setTimeout(() => setUntil(0), left);
    return () => clearTimeout(timer);
  }, [until]);
  const active = until > Date.now();
  return html`<div role="status" class="rate-limit-slot">
    ${active
      ? html`<p class="notice warn" id="rate-limit-notice">
          This token has used up its API budget for now (429 Too Many Requests). Live updates pause until
          ${' '}<time datetime=${new Date(until).toISOString()}>${new Date(until).toLocaleTimeString()}</time> and then resume by
          themselves; changes may be refused until then.
        </p>`
      : null}
  </div>`;
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
  // The button keeps its text (and so its name) while the note beside it says what happened.
  return html`<button type="button" class="button secondary small" onClick=${copy} aria-label=${`Copy ${what}`}>${label}</button
    ><span class="copy-note" role="status">${note === `Copied ${what}`
      ? html`Copied<span class="visually-hidden"> ${what}</span>`
      : note}</span>`;
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

/** The spec the instance is heading to: the pending deployment's, else the live one. */
export function desiredSpec(instance) {
  return instance.pending_deployment_spec ?? instance.spec;
}
