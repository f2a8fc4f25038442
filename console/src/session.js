// What the console keeps in the browser: the control-plane token and playground tokens, in
// sessionStorage only (gone when the tab closes; never in localStorage, cookies or URLs).
const TOKEN_KEY = 'inferd.token';
const PLAYGROUND_PREFIX = 'inferd.playground.';

export function getToken() {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function setToken(value) {
  sessionStorage.setItem(TOKEN_KEY, value);
}

/** Forget everything this console stored (sign out). */
export function clearSession() {
  for (const key of Object.keys(sessionStorage)) {
    if (key.startsWith('inferd.')) sessionStorage.removeItem(key);
  }
}

/** The di_ token the playground uses for an instance: {value, id?, name?} or null. */
export function getPlaygroundToken(instanceId) {
  try {
    return JSON.parse(sessionStorage.getItem(PLAYGROUND_PREFIX + instanceId) ?? 'null');
  } catch {
    return null;
  }
}

export function setPlaygroundToken(instanceId, token) {
  if (token && token.value) sessionStorage.setItem(PLAYGROUND_PREFIX + instanceId, JSON.stringify(token));
  else sessionStorage.removeItem(PLAYGROUND_PREFIX + instanceId);
}

/** Drop the playground token if it is the one with this id (it was revoked). */
export function forgetPlaygroundToken(instanceId, tokenId) {
  const current = getPlaygroundToken(instanceId);
  if (current && current.id === tokenId) setPlaygroundToken(instanceId, null);
}
