// The console's entry point: session, layout, routes.
import { render } from 'preact';
import { useEffect, useRef, useState } from 'preact/hooks';
import { onUnauthorized } from './api.js';
import { SignIn } from './auth.js';
import { CreateForm } from './create.js';
import { html } from './html.js';
import { InstancePage } from './instance.js';
import { InstanceList } from './list.js';
import { Link, navigate, useRoute } from './router.js';
import { clearSession, getToken } from './session.js';
import { RateLimitNotice } from './ui.js';

const TITLES = { list: 'Instances', create: 'Create an instance', instance: 'Instance', 'not-found': 'Not found' };

function App() {
  const [signedIn, setSignedIn] = useState(() => Boolean(getToken()));
  const [notice, setNotice] = useState('');
  const route = useRoute();
  const main = useRef();
  const first = useRef(true);

  useEffect(() => {
    onUnauthorized(() => {
      clearSession();
      setNotice('The API no longer accepts your token (it was revoked or expired). Sign in again.');
      setSignedIn(false);
    });
  }, []);

  // On each navigation, title the document and move focus to the new page's heading.
  useEffect(() => {
    document.title = `${TITLES[route.name] ?? 'inferd'} · inferd console`;
    if (first.current) {
      first.current = false;
      return;
    }
    const heading = main.current?.querySelector('h1');
    if (heading) heading.focus({ preventScroll: false });
  }, [route.path, route.serial]);

  if (!signedIn) {
    return html`<${SignIn} notice=${notice} onSignedIn=${() => {
      setNotice('');
      setSignedIn(true);
    }} />`;
  }

  const signOut = () => {
    clearSession();
    setNotice('Signed out. The token was removed from this tab.');
    setSignedIn(false);
    navigate('/', { replace: true });
  };

  let page;
  if (route.name === 'list') page = html`<${InstanceList} flash=${route.flash} />`;
  else if (route.name === 'create') page = html`<${CreateForm} key=${route.serial} />`;
  else if (route.name === 'instance') page = html`<${InstancePage} id=${route.params.id} tab=${route.params.tab} key=${route.params.id} />`;
  else {
    page = html`<section class="stack"><h1 tabindex="-1">Page not found</h1>
      <p>The console has no page at <code>${route.path}</code>.</p><p><${Link} to="/">Go to the instances<//></p></section>`;
  }

  return html`
    <a class="skip-link" href="#main">Skip to content</a>
    <header class="topbar">
      <div class="topbar-inner">
        <${Link} to="/" class="brand"><span class="brand-mark" aria-hidden="true"></span>inferd<//>
        <nav aria-label="Main">
          <ul>
            <li><${Link} to="/" aria-current=${route.name === 'list' ? 'page' : undefined}>Instances<//></li>
            <li><${Link} to="/new" aria-current=${route.name === 'create' ? 'page' : undefined}>Create<//></li>
          </ul>
        </nav>
        <button type="button" class="button secondary small" onClick=${signOut}>Sign out</button>
      </div>
    </header>
    <main id="main" ref=${main} tabindex="-1"><${RateLimitNotice} />${page}</main>
    <footer class="footer">
      <a href="/v2/docs">API reference</a>
      <a href="/console/assets/third-party-licenses.txt">Third-party licenses</a>
    </footer>
  `;
}

render(html`<${App} />`, document.getElementById('app'));
