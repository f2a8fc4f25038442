// One instance: status, endpoints, snippets, traffic, spec, replicas; tabs for the rest.
import { useEffect, useRef, useState } from 'preact/hooks';
import { api, ApiError } from './api.js';
import { TrafficCharts, useMetrics } from './charts.js';
import { html } from './html.js';
import { Playground } from './playground.js';
import { CHANGING_MS, SETTLED_MS, isSettled } from './polling.js';
import { Link } from './router.js';
import { Settings } from './settings.js';
import { curlSnippet, pythonSnippet, snippetEndpoint } from './snippets.js';
import { TokensPanel } from './tokens.js';
import { CopyButton, ErrorMessage, StatusBadge, Time, desiredSpec, usePoll } from './ui.js';

const TABS = [
  ['overview', 'Overview'],
  ['playground', 'Playground'],
  ['tokens', 'Tokens'],
  ['settings', 'Settings'],
];

/** Poll an instance often while it changes, every 10 s once settled, no more once it is gone. */
function instanceInterval(instance, error) {
  if (error instanceof ApiError && error.status === 404) return 0;
  return instance && isSettled(instance) ? SETTLED_MS : CHANGING_MS;
}

export function InstancePage({ id, tab }) {
  const { data: instance, error, refresh } = usePoll(() => api.getInstance(id), instanceInterval, [id]);
  // The charts keep sampling on every tab of the page, so that coming back to Overview shows
  // what happened meanwhile (a chat in the playground, say).
  const metrics = useMetrics(id);
  const gone = error instanceof ApiError && error.status === 404;
  const spec = instance && !gone ? desiredSpec(instance) : null;
  const base = `/instances/${id}`;

  // One heading element whatever the state, so the focus put on it at navigation stays there.
  let title = 'Instance';
  if (gone) title = 'Instance not found';
  else if (spec) title = spec.name;

  let body;
  if (gone) {
    body = html`<p role="alert">Your team has no instance with the id <code>${id}</code>; it may have been deleted.</p>
      <p><${Link} to="/">Back to instances<//></p>`;
  } else if (!instance) {
    body = html`<${ErrorMessage} error=${error} prefix="Could not load the instance" />
      ${!error ? html`<p class="muted" role="status">Loading…</p>` : null}`;
  } else {
    body = html`
      ${instance.status_reason
        ? html`<p class=${instance.status === 'error' ? 'error' : 'notice'} id="status-reason" aria-live="polite">
            ${instance.status_reason}
          </p>`
        : null}
      <${ErrorMessage} error=${error} prefix="Could not refresh" />
      <nav aria-label="Instance sections">
        <ul class="tabs">
          ${TABS.map(
            ([key, label]) => html`<li key=${key}>
              <${Link} to=${key === 'overview' ? base : `${base}/${key}`} aria-current=${tab === key ? 'page' : undefined}>${label}<//>
            </li>`,
          )}
        </ul>
      </nav>
      ${tab === 'overview' ? html`<${Overview} instance=${instance} metrics=${metrics} />` : null}
      ${tab === 'playground' ? html`<${Playground} instance=${instance} />` : null}
      ${tab === 'tokens' ? html`<${TokensPanel} instance=${instance} />` : null}
      ${tab === 'settings' ? html`<${Settings} instance=${instance} onChanged=${refresh} />` : null}
    `;
  }

  return html`<section class="stack" aria-labelledby="instance-title">
    <nav aria-label="Breadcrumb" class="breadcrumb"><${Link} to="/">Instances<//> <span aria-hidden="true">/</span></nav>
    <div class="page-head">
      <h1 id="instance-title" tabindex="-1">${title}</h1>
      ${instance && !gone
        ? html`<div class="status-line" aria-live="polite" aria-atomic="true">
            <span class="visually-hidden">Status: </span><${StatusBadge} status=${instance.status} />
          </div>`
        : null}
    </div>
    ${body}
  </section>`;
}

function Overview({ instance, metrics }) {
  return html`<div class="stack">
    <${TrafficCharts} metrics=${metrics} />
    <${Endpoints} instance=${instance} />
    <${Snippets} instance=${instance} />
    <${Spec} instance=${instance} />
    <${Replicas} instance=${instance} />
  </div>`;
}

function Endpoints({ instance }) {
  const publicUrl = instance.endpoints?.public_endpoint_fqdn;
  const privateUrl = instance.endpoints?.private_endpoint_fqdn;
  const [caError, setCaError] = useState(null);
  const link = useRef();
  const downloadCa = async () => {
    setCaError(null);
    try {
      const pem = await api.caCertificate(instance.id);
      const url = URL.createObjectURL(new Blob([pem], { type: 'application/x-pem-file' }));
      link.current.href = url;
      link.current.click();
      setTimeout(() => URL.revokeObjectURL(url), 10000);
    } catch (err) {
      setCaError(err);
    }
  };
  return html`<section class="card" aria-labelledby="endpoints-title">
    <h2 id="endpoints-title">Endpoints</h2>
    <dl class="pairs">
      <dt>Public</dt>
      <dd>
        ${publicUrl
          ? html`<code id="public-endpoint" class="wrap">${publicUrl}</code> <${CopyButton} text=${publicUrl} what="public endpoint" />`
          : html`<span class="muted">disabled (turn it on in Settings)</span>`}
      </dd>
      <dt>Private</dt>
      <dd>
        <code id="private-endpoint" class="wrap">${privateUrl}</code> <${CopyButton} text=${privateUrl} what="private endpoint" />
        <button type="button" class="button secondary small" onClick=${downloadCa}>Download CA certificate</button>
        <a ref=${link} download=${`${instance.spec.name}-ca.pem`} hidden>CA</a>
      </dd>
    </dl>
    <p class="hint">Both serve the OpenAI API under <code>/v1</code> with a <code>di_</code> token of this instance. The private
      endpoint's TLS certificate is issued by the instance's own CA.</p>
    <${ErrorMessage} error=${caError} prefix="Could not get the CA certificate" />
  </section>`;
}

// A code block may scroll sideways, so it is focusable (keyboard scrolling) and therefore a named
// region: aria-labelledby alone is not allowed on a <pre>, whose role is generic.
function Snippets({ instance }) {
  const model = desiredSpec(instance).model_deployments[0]?.model_slug ?? '';
  const curl = curlSnippet(instance, model);
  const python = pythonSnippet(instance, model);
  const { private: isPrivate } = snippetEndpoint(instance);
  return html`<section class="card" aria-labelledby="snippets-title">
    <h2 id="snippets-title">Use it</h2>
    <p class="hint">Set <code>DI_TOKEN</code> to an access token of this instance (Tokens tab)${isPrivate
      ? ' and save the CA certificate as instance-ca.pem'
      : ''}.</p>
    <div class="snippet">
      <div class="snippet-head"><h3 id="snippet-curl">curl</h3><${CopyButton} text=${curl} what="curl command" /></div>
      <pre role="region" aria-labelledby="snippet-curl" tabindex="0"><code>${curl}</code></pre>
    </div>
    <div class="snippet">
      <div class="snippet-head"><h3 id="snippet-python">Python (openai)</h3><${CopyButton} text=${python} what="Python snippet" /></div>
      <pre role="region" aria-labelledby="snippet-python" tabindex="0"><code>${python}</code></pre>
    </div>
  </section>`;
}

function Deployments({ deployments, caption }) {
  return html`<table class="table responsive">
    <caption class="visually-hidden">${caption}</caption>
    <thead>
      <tr><th scope="col">Model</th><th scope="col">Accelerators</th><th scope="col">Workload config</th><th scope="col">Model id</th></tr>
    </thead>
    <tbody>
      ${deployments.map(
        (d) => html`<tr key=${d.model_id || d.model_slug}>
          <th scope="row" data-label="Model" class="wrap">${d.model_slug}</th>
          <td data-label="Accelerators">
            ${d.accelerators.map((a) => html`<div key=${a.accelerator_slug}>${a.accelerator_slug} × ${a.scale}${a.status ? ` (${a.status})` : ''}</div>`)}
          </td>
          <td data-label="Workload config"><code class="wrap">${JSON.stringify(d.workload_config ?? {})}</code></td>
          <td data-label="Model id"><code class="wrap small">${d.model_id}</code></td>
        </tr>`,
      )}
    </tbody>
  </table>`;
}

function Spec({ instance }) {
  const { spec } = instance;
  const pending = instance.pending_deployment_spec;
  return html`<section class="card" aria-labelledby="spec-title">
    <h2 id="spec-title">Spec</h2>
    <dl class="pairs">
      <dt>Version</dt><dd>${spec.version}</dd>
      <dt>Region</dt><dd>${instance.region}</dd>
      <dt>Public endpoint</dt><dd>${spec.enable_public_endpoint ? 'enabled' : 'disabled'}</dd>
      <dt>VPC</dt><dd><code class="wrap">${instance.vpc_uuid}</code></dd>
      <dt>Instance id</dt><dd><code class="wrap">${instance.id}</code> <${CopyButton} text=${instance.id} what="instance id" /></dd>
      <dt>Created</dt><dd><${Time} value=${instance.created_at} /></dd>
      <dt>Updated</dt><dd><${Time} value=${instance.updated_at} /></dd>
    </dl>
    <h3>Model deployments</h3>
    <${Deployments} deployments=${spec.model_deployments} caption="Model deployments of the live spec" />
    ${pending
      ? html`<div class="pending" id="pending-spec">
          <h3>Pending spec: version ${pending.version} (${pending.status})</h3>
          <p class="hint">Being rolled out since <${Time} value=${pending.created_at} />. The live spec keeps serving until the new
            replicas are ready.</p>
          <dl class="pairs">
            <dt>Name</dt><dd>${pending.name}</dd>
            <dt>Public endpoint</dt><dd>${pending.enable_public_endpoint ? 'enabled' : 'disabled'}</dd>
          </dl>
          <${Deployments} deployments=${pending.model_deployments} caption="Model deployments of the pending spec" />
        </div>`
      : null}
    <details>
      <summary>Instance as JSON</summary>
      <pre role="region" aria-label="Instance as JSON" tabindex="0"><code>${JSON.stringify(instance, null, 2)}</code></pre>
    </details>
  </section>`;
}

function Replicas({ instance }) {
  const every = isSettled(instance) ? SETTLED_MS : CHANGING_MS;
  const { data, error, refresh } = usePoll(() => api.accelerators(instance.id), every, [instance.id]);
  // Accelerators come and go with the instance's changes: read them again as soon as it changes.
  const change = `${instance.status} ${instance.updated_at} ${instance.pending_deployment_spec?.version ?? ''}`;
  const seen = useRef(change);
  useEffect(() => {
    if (seen.current === change) return;
    seen.current = change;
    refresh();
  }, [change]);
  return html`<section class="card" aria-labelledby="replicas-title">
    <h2 id="replicas-title">Replicas and accelerators</h2>
    <${ErrorMessage} error=${error} prefix="Could not load the accelerators" />
    ${data && data.length === 0 ? html`<p class="muted">No accelerator is allocated yet.</p>` : null}
    ${data && data.length > 0
      ? html`<table class="table responsive" id="accelerators">
          <caption class="visually-hidden">Accelerators serving this instance</caption>
          <thead><tr><th scope="col">Name</th><th scope="col">Slug</th><th scope="col">Role</th><th scope="col">Status</th><th scope="col">Since</th></tr></thead>
          <tbody>
            ${data.map(
              (a) => html`<tr key=${a.id}>
                <th scope="row" data-label="Name">${a.name}</th>
                <td data-label="Slug">${a.slug}</td>
                <td data-label="Role">${a.role}</td>
                <td data-label="Status"><${StatusBadge} status=${a.status} /></td>
                <td data-label="Since"><${Time} value=${a.created_at} /></td>
              </tr>`,
            )}
          </tbody>
        </table>`
      : null}
  </section>`;
}

