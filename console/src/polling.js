// How often the console polls the API (pure functions, no DOM; unit-tested with node --test).
//
// Every poll is an API request counted against the token's rate limit (by default 250 a minute
// and 5,000 an hour), shared with whatever else uses the token (the CLI, scripts). So the console
// polls often only while something changes, slowly once things have settled, never from a hidden
// tab, and not at all while the API says the budget is used up (429).

/** While an instance is being created, updated or deleted: its status moves within seconds. */
export const CHANGING_MS = 2000;
/** Once every instance shown is settled: only a change made elsewhere (the CLI) is waited for. */
export const SETTLED_MS = 10000;
/** A 429 without a usable retry-after or ratelimit-reset header. */
const DEFAULT_BACKOFF_SECONDS = 30;
const MAX_BACKOFF_SECONDS = 3600;

/** active or error, with no pending spec being rolled out: nothing will change by itself. */
export function isSettled(instance) {
  return (instance.status === 'active' || instance.status === 'error') && !instance.pending_deployment_spec;
}

/** How often to poll a page showing these instances: often while one changes, rarely after. */
export function pollInterval(instances) {
  return instances.every(isSettled) ? SETTLED_MS : CHANGING_MS;
}

/**
 * Seconds to wait after a 429, from its headers (get: name => value or null): Retry-After
 * (seconds, or an HTTP date), else ratelimit-reset (inferd sends the epoch second the budget
 * refills; a small number is read as seconds from now, as in the IETF draft), else 30 s.
 * At least 1 s, at most an hour.
 */
export function retryAfterSeconds(get, nowMs = Date.now()) {
  let seconds = null;
  const retryAfter = (get('retry-after') ?? '').trim();
  if (/^\d+$/.test(retryAfter)) seconds = Number(retryAfter);
  else if (retryAfter) {
    const date = Date.parse(retryAfter);
    if (!Number.isNaN(date)) seconds = (date - nowMs) / 1000;
  }
  if (seconds === null) {
    const reset = (get('ratelimit-reset') ?? '').trim();
    if (/^\d+$/.test(reset)) {
      const value = Number(reset);
      seconds = value > 1e9 ? value - nowMs / 1000 : value;
    }
  }
  if (seconds === null || !Number.isFinite(seconds)) seconds = DEFAULT_BACKOFF_SECONDS;
  return Math.min(Math.max(Math.ceil(seconds), 1), MAX_BACKOFF_SECONDS);
}

/**
 * Milliseconds until a poll may run: its interval after the previous answer, and not before the
 * rate limit lifts. lastDoneMs null: it never answered, so now (or when the limit lifts).
 */
export function nextPollDelay({ lastDoneMs, intervalMs, limitedUntilMs = 0, nowMs }) {
  const due = lastDoneMs === null ? nowMs : lastDoneMs + intervalMs;
  return Math.max(0, due - nowMs, limitedUntilMs - nowMs);
}
