// The team's instances with their live status (polled).
import { api } from './api.js';
import { html } from './html.js';
import { pollInterval } from './polling.js';
import { Link } from './router.js';
import { ErrorMessage, StatusBadge, Time, acceleratorSummary, desiredSpec, modelSummary, usePoll } from './ui.js';

function summary(instances) {
  if (instances.length === 0) return 'No instances.';
  const counts = {};
  for (const instance of instances) counts[instance.status] = (counts[instance.status] ?? 0) + 1;
  const parts = Object.entries(counts).map(([status, n]) => `${n} ${status}`);
  return `${instances.length} instance${instances.length === 1 ? '' : 's'}: ${parts.join(', ')}.`;
}

export function InstanceList({ flash }) {
  // every 2 s while an instance changes, every 10 s once all are settled
  const { data, error, loading } = usePoll(api.listInstances, (instances) => pollInterval(instances ?? []));
  const instances = data ?? [];
  return html`<section aria-labelledby="list-title">
    <div class="page-head">
      <h1 id="list-title" tabindex="-1">Instances</h1>
      <${Link} to="/new" class="button primary">Create instance<//>
    </div>
    ${flash ? html`<p class="notice" role="status">${flash}</p>` : null}
    <${ErrorMessage} error=${error} prefix="Could not load the instances" />
    <p class="muted" aria-live="polite" id="list-summary">${loading && !data ? 'Loading…' : summary(instances)}</p>
    ${data && instances.length === 0
      ? html`<div class="card empty">
          <p>This team has no Dedicated Inference instance yet.</p>
          <p><${Link} to="/new" class="button primary">Create your first instance<//></p>
        </div>`
      : null}
    ${instances.length > 0
      ? html`<table class="table responsive" aria-describedby="list-summary">
          <caption class="visually-hidden">Dedicated Inference instances, live status</caption>
          <thead>
            <tr>
              <th scope="col">Name</th>
              <th scope="col">Status</th>
              <th scope="col">Region</th>
              <th scope="col">Model</th>
              <th scope="col">Accelerators</th>
              <th scope="col">Created</th>
            </tr>
          </thead>
          <tbody>
            ${instances.map((instance) => {
              const spec = desiredSpec(instance);
              return html`<tr key=${instance.id} data-instance-id=${instance.id}>
                <th scope="row" data-label="Name"><${Link} to=${`/instances/${instance.id}`}>${spec.name}<//></th>
                <td data-label="Status"><${StatusBadge} status=${instance.status} /></td>
                <td data-label="Region">${instance.region}</td>
                <td data-label="Model" class="wrap">${modelSummary(spec)}</td>
                <td data-label="Accelerators">${acceleratorSummary(spec)}</td>
                <td data-label="Created"><${Time} value=${instance.created_at} /></td>
              </tr>`;
            })}
          </tbody>
        </table>`
      : null}
  </section>`;
}
