// Client-side routes under /console (the server answers index.html for all of them).
import { useEffect, useState } from 'preact/hooks';
import { html } from './html.js';

export const BASE = '/console';
const CHANGE = 'inferd:navigate';
const TABS = new Set(['overview', 'playground', 'tokens', 'settings']);
const UUID = '[0-9a-fA-F-]{36}';

/** {name, params} for a path under /console. */
export function match(pathname) {
  let rest = pathname.startsWith(BASE) ? pathname.slice(BASE.length) : pathname;
  rest = rest.replace(/\/+$/, '');
  if (rest === '') return { name: 'list', params: {} };
  if (rest === '/new') return { name: 'create', params: {} };
  const instance = rest.match(new RegExp(`^/instances/(${UUID})(?:/([a-z]+))?$`));
  if (instance && (!instance[2] || TABS.has(instance[2]))) {
    return { name: 'instance', params: { id: instance[1].toLowerCase(), tab: instance[2] ?? 'overview' } };
  }
  return { name: 'not-found', params: {} };
}

export function href(path) {
  return BASE + path;
}

/** Go to a path under /console; flash is a one-line notice for the next page. */
export function navigate(path, { replace = false, flash = null } = {}) {
  const url = href(path);
  const state = flash ? { flash } : null;
  if (replace) history.replaceState(state, '', url);
  else history.pushState(state, '', url);
  window.dispatchEvent(new Event(CHANGE));
}

/** The current route; re-renders on back/forward and on navigate(). */
export function useRoute() {
  const [path, setPath] = useState(window.location.pathname);
  const [serial, setSerial] = useState(0);
  useEffect(() => {
    const update = () => {
      setPath(window.location.pathname);
      setSerial((n) => n + 1);
    };
    window.addEventListener('popstate', update);
    window.addEventListener(CHANGE, update);
    return () => {
      window.removeEventListener('popstate', update);
      window.removeEventListener(CHANGE, update);
    };
  }, []);
  return { path, serial, flash: history.state?.flash ?? null, ...match(path) };
}

/** An ordinary link (works with middle click, copy link, no JS) that navigates in place. */
export function Link({ to, children, ...rest }) {
  const onClick = (event) => {
    if (event.defaultPrevented || event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) {
      return;
    }
    event.preventDefault();
    navigate(to);
  };
  return html`<a href=${href(to)} onClick=${onClick} ...${rest}>${children}</a>`;
}
