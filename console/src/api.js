// The control-plane client: /v2/dedicated-inferences on this origin, bearer dop_v1_ token.
import { retryAfterSeconds } from './polling.js';
import { getToken } from './session.js';

const BASE = '/v2/dedicated-inferences';
let unauthorizedHandler = () => {};
/** Epoch ms until which the API's rate limit refuses this token (after a 429); 0: not limited. */
let limitedUntil = 0;
const rateLimitListeners = new Set();

/** An API answer other than 2xx, with DigitalOcean's error body {id, message, request_id}. */
export class ApiError extends Error {
  constructor(status, message, errorId, requestId, retryAfter = null) {
    super(message);
    this.status = status;
    this.errorId = errorId;
    this.requestId = requestId;
    /** Seconds to wait before trying again (429 only). */
    this.retryAfter = retryAfter;
  }
}

/** When the API will take this token's requests again (epoch ms; 0 or past: now). */
export function rateLimitedUntil() {
  return limitedUntil;
}

/** listener(untilMs) is called on each 429 that pushes the wait further; returns the unsubscriber. */
export function onRateLimited(listener) {
  rateLimitListeners.add(listener);
  return () => rateLimitListeners.delete(listener);
}

function noteRateLimited(seconds) {
  const until = Date.now() + seconds * 1000;
  if (until <= limitedUntil) return;
  limitedUntil = until;
  for (const listener of rateLimitListeners) listener(until);
}

/** Called when the API refuses the session's token (401): the app signs out. */
export function onUnauthorized(handler) {
  unauthorizedHandler = handler;
}

async function request(method, path, { body, query, token } = {}) {
  const url = new URL(BASE + path, window.location.origin);
  for (const [key, value] of Object.entries(query ?? {})) {
    if (value !== undefined && value !== null && value !== '') url.searchParams.set(key, String(value));
  }
  const bearer = token ?? getToken();
  const headers = { Accept: 'application/json', Authorization: `Bearer ${bearer}` };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let response;
  try {
    response = await fetch(url, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: 'no-store',
      credentials: 'omit',
    });
  } catch (error) {
    throw new ApiError(0, `The API could not be reached (${error.message}).`, 'network_error', null);
  }
  const text = await response.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = null;
    }
  }
  if (!response.ok) {
    const requestId = data?.request_id ?? response.headers.get('x-request-id');
    const retryAfter = response.status === 429 ? retryAfterSeconds((name) => response.headers.get(name)) : null;
    const error = new ApiError(
      response.status,
      data?.message ?? `${response.status} ${response.statusText}`,
      data?.id ?? 'error',
      requestId,
      retryAfter,
    );
    if (response.status === 401 && token === undefined) unauthorizedHandler(error);
    if (retryAfter !== null && token === undefined) noteRateLimited(retryAfter);
    throw error;
  }
  return data;
}

/** Every page of a list operation (the console shows whole lists; teams have few instances). */
async function all(path, key, query = {}) {
  const items = [];
  for (let page = 1; page <= 50; page += 1) {
    const data = await request('GET', path, { query: { ...query, per_page: 200, page } });
    items.push(...data[key]);
    if (!data.links?.pages?.next || items.length >= data.meta.total) break;
  }
  return items;
}

export const api = {
  /** Check a token without storing it: resolves if the API accepts it. */
  checkToken: (token) => request('GET', '', { token, query: { per_page: 1 } }),
  listInstances: () => all('', 'dedicated_inferences'),
  getInstance: (id) => request('GET', `/${id}`).then((d) => d.dedicated_inference),
  createInstance: (body) => request('POST', '', { body }),
  updateInstance: (id, body) => request('PATCH', `/${id}`, { body }).then((d) => d.dedicated_inference),
  deleteInstance: (id) => request('DELETE', `/${id}`),
  accelerators: (id) => all(`/${id}/accelerators`, 'accelerators'),
  tokens: (id) => all(`/${id}/tokens`, 'tokens'),
  createToken: (id, name) => request('POST', `/${id}/tokens`, { body: { name } }).then((d) => d.token),
  revokeToken: (id, tokenId) => request('DELETE', `/${id}/tokens/${tokenId}`),
  sizes: () => request('GET', '/sizes'),
  gpuModelConfig: () => request('GET', '/gpu-model-config'),
  metrics: (id) => request('GET', `/${id}/metrics`),
  caCertificate: (id) => request('GET', `/${id}/ca`).then((d) => atob(d.cert)),
};

/** One line for an error: the message, and the request id to quote to an operator. */
export function describeError(error) {
  if (!(error instanceof ApiError)) return String(error?.message ?? error);
  let text = error.requestId ? `${error.message} (request id ${error.requestId})` : error.message;
  if (error.retryAfter !== null) text += ` Try again in ${error.retryAfter} s.`;
  return text;
}
