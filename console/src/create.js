// The create form, built from what this installation offers (/sizes and /gpu-model-config).
import { useEffect, useMemo, useRef, useState } from 'preact/hooks';
import { api, describeError } from './api.js';
import { html } from './html.js';
import { Link } from './router.js';
import { setPlaygroundToken } from './session.js';
import { CopyButton, ErrorMessage } from './ui.js';

const NAME_PATTERN = '^[a-zA-Z0-9_\\-]+$';

function randomSuffix() {
  const bytes = crypto.getRandomValues(new Uint8Array(3));
  return [...bytes].map((b) => b.toString(16).padStart(2, '0')).join('');
}

/** A form control's name for people: its label's text. */
function fieldName(element) {
  return element.labels?.[0]?.textContent.trim() || element.name;
}

function fitting(sizes, model, region) {
  if (!sizes || !model) return [];
  return sizes.sizes.filter((s) => s.region === region && model.gpu_slugs.includes(s.gpu_slug));
}

export function CreateForm() {
  const [catalog, setCatalog] = useState(null);
  const [loadError, setLoadError] = useState(null);
  const [form, setForm] = useState({
    name: `inference-${randomSuffix()}`,
    region: '',
    model: '',
    accelerator: '',
    scale: 1,
    isPublic: true,
    vpc: crypto.randomUUID(),
    hfToken: '',
    workload: '{}',
  });
  const [error, setError] = useState(null);
  const [problems, setProblems] = useState([]); // [{id, text}] of the controls the last submit found wrong
  const [busy, setBusy] = useState(false);
  const [created, setCreated] = useState(null);
  const errorRef = useRef();

  useEffect(() => {
    Promise.all([api.sizes(), api.gpuModelConfig()])
      .then(([sizes, models]) => {
        setCatalog({ sizes, models: models.gpu_model_configs });
        const region = sizes.enabled_regions.find((r) => sizes.sizes.some((s) => s.region === r)) ?? sizes.enabled_regions[0] ?? '';
        const model = models.gpu_model_configs.find((m) => fitting(sizes, m, region).length > 0) ?? models.gpu_model_configs[0];
        const accelerator = fitting(sizes, model, region)[0]?.gpu_slug ?? '';
        setForm((f) => ({ ...f, region, model: model?.model_slug ?? '', accelerator }));
      })
      .catch(setLoadError);
  }, []);

  const model = useMemo(() => catalog?.models.find((m) => m.model_slug === form.model), [catalog, form.model]);
  const choices = useMemo(() => fitting(catalog?.sizes, model, form.region), [catalog, model, form.region]);
  // The Hugging Face token field exists only for a gated model: once it is gone, so is its complaint.
  const invalid = problems.filter((field) => field.id !== 'create-hf-token' || model?.is_gated_model);
  const message = invalid.length > 0 ? invalid.map((field) => field.text).join(' ') : error;

  /** aria-invalid and aria-describedby of a control: the form's error names it when it is wrong. */
  const check = (id, hint) => {
    const wrong = invalid.some((field) => field.id === id);
    const describedBy = [hint, wrong ? 'create-error' : null].filter(Boolean).join(' ');
    return { 'aria-invalid': wrong ? 'true' : undefined, 'aria-describedby': describedBy || undefined };
  };

  // Keep the accelerator valid when the region or model changes.
  useEffect(() => {
    if (catalog && !choices.some((c) => c.gpu_slug === form.accelerator)) {
      setForm((f) => ({ ...f, accelerator: choices[0]?.gpu_slug ?? '' }));
    }
  }, [catalog, choices, form.accelerator]);

  const set = (field) => (event) => {
    const target = event.currentTarget;
    const value = target.type === 'checkbox' ? target.checked : target.value;
    setForm((f) => ({ ...f, [field]: value }));
    setProblems((fields) => fields.filter((f) => f.id !== target.id));
  };

  const fail = (message) => {
    setError(message);
    setBusy(false);
    setTimeout(() => errorRef.current?.focus(), 0);
  };

  const submit = async (event) => {
    event.preventDefault();
    setError(null);
    // The form checks itself (noValidate): the browser's bubbles name no field and vanish, so the
    // error line names each field that is wrong, and focus goes to the first one.
    const wrong = [...event.currentTarget.elements].filter((element) => element.willValidate && !element.checkValidity());
    setProblems(wrong.map((element) => ({ id: element.id, text: `${fieldName(element)}: ${element.validationMessage}` })));
    if (wrong.length > 0) {
      wrong[0].focus();
      return;
    }
    let workloadConfig;
    try {
      workloadConfig = JSON.parse(form.workload.trim() || '{}');
      if (typeof workloadConfig !== 'object' || workloadConfig === null || Array.isArray(workloadConfig)) throw new Error();
    } catch {
      fail('Workload config must be a JSON object, such as {} or {"context_length": 4096}.');
      return;
    }
    const body = {
      spec: {
        version: 1,
        name: form.name.trim(),
        region: form.region,
        vpc: { uuid: form.vpc.trim() },
        enable_public_endpoint: form.isPublic,
        model_deployments: [
          {
            model_slug: form.model,
            model_provider: 'hugging_face',
            workload_config: workloadConfig,
            accelerators: [{ accelerator_slug: form.accelerator, scale: Number(form.scale), type: 'prefill_decode' }],
          },
        ],
      },
    };
    if (model?.is_gated_model) body.access_tokens = { hugging_face_token: form.hfToken.trim() };
    setBusy(true);
    try {
      const answer = await api.createInstance(body);
      const instance = answer.dedicated_inference;
      setPlaygroundToken(instance.id, { value: answer.token.value, id: answer.token.id, name: answer.token.name });
      setCreated(answer);
    } catch (err) {
      fail(describeError(err));
    }
  };

  if (created) return html`<${Created} answer=${created} />`;

  return html`<section aria-labelledby="create-title">
    <div class="page-head"><h1 id="create-title" tabindex="-1">Create an instance</h1></div>
    <${ErrorMessage} error=${loadError} prefix="Could not load what this installation offers" />
    ${!catalog && !loadError ? html`<p class="muted" role="status">Loading regions, accelerators and models…</p>` : null}
    ${catalog
      ? html`<form class="card stack" onSubmit=${submit} noValidate aria-describedby=${message ? 'create-error' : undefined}>
          ${message ? html`<p id="create-error" class="error" role="alert" tabindex="-1" ref=${errorRef}>${message}</p>` : null}
          <div class="grid two">
            <div class="field">
              <label for="create-name">Name</label>
              <input id="create-name" name="name" required maxlength="255" pattern=${NAME_PATTERN} autocomplete="off"
                ...${check('create-name', 'create-name-hint')} value=${form.name} onInput=${set('name')} />
              <p id="create-name-hint" class="hint">Letters, digits, - and _; unique in your team.</p>
            </div>
            <div class="field">
              <label for="create-region">Region</label>
              <select id="create-region" name="region" required value=${form.region} onChange=${set('region')}>
                ${catalog.sizes.enabled_regions.map((r) => html`<option key=${r} value=${r}>${r}</option>`)}
              </select>
            </div>
            <div class="field">
              <label for="create-model">Model</label>
              <select id="create-model" name="model" required value=${form.model} onChange=${set('model')}
                aria-describedby="create-model-hint">
                ${catalog.models.map(
                  (m) => html`<option key=${m.model_slug} value=${m.model_slug}>
                    ${m.model_name} (${m.model_slug})${m.is_gated_model ? ' · gated' : ''}
                  </option>`,
                )}
              </select>
              <p id="create-model-hint" class="hint">${model ? `Runs on ${model.gpu_slugs.join(', ')}.` : ''}</p>
            </div>
            <div class="field">
              <label for="create-accelerator">Accelerator</label>
              <select id="create-accelerator" name="accelerator" required value=${form.accelerator}
                onChange=${set('accelerator')} disabled=${choices.length === 0} aria-describedby="create-accelerator-hint">
                ${choices.map(
                  (c) => html`<option key=${c.gpu_slug} value=${c.gpu_slug}>
                    ${c.gpu_slug} (${c.price_per_hour} ${c.currency}/hour)
                  </option>`,
                )}
              </select>
              <p id="create-accelerator-hint" class=${choices.length === 0 ? 'error' : 'hint'}>
                ${choices.length === 0
                  ? `No accelerator in ${form.region} runs this model: pick another region or model.`
                  : 'Price per unit; the scale is the number of replicas.'}
              </p>
            </div>
            <div class="field">
              <label for="create-scale">Scale (replicas)</label>
              <input id="create-scale" name="scale" type="number" inputmode="numeric" min="1" max="1000" step="1" required
                ...${check('create-scale')} value=${form.scale} onInput=${set('scale')} />
            </div>
            <div class="field">
              <label for="create-vpc">VPC UUID</label>
              <input id="create-vpc" name="vpc" required autocomplete="off" spellcheck="false" class="mono"
                ...${check('create-vpc', 'create-vpc-hint')} value=${form.vpc} onInput=${set('vpc')} />
              <p id="create-vpc-hint" class="hint">The network the private endpoint belongs to; fixed for the instance's life.</p>
            </div>
          </div>
          <div class="field checkbox">
            <input id="create-public" name="public" type="checkbox" checked=${form.isPublic} onChange=${set('isPublic')}
              aria-describedby="create-public-hint" />
            <label for="create-public">Public endpoint</label>
            <p id="create-public-hint" class="hint">Serve the OpenAI API on the public listener too (the playground uses it).
              The private endpoint (TLS from the instance's own CA) always exists.</p>
          </div>
          ${model?.is_gated_model
            ? html`<div class="field">
                <label for="create-hf-token">Hugging Face token</label>
                <input id="create-hf-token" name="hf_token" type="password" required autocomplete="off" spellcheck="false"
                  ...${check('create-hf-token', 'create-hf-hint')} value=${form.hfToken} onInput=${set('hfToken')} />
                <p id="create-hf-hint" class="hint">${model.model_name} is a gated model: inferd downloads it with your token,
                  stores the token encrypted and never shows it again.</p>
              </div>`
            : null}
          <details>
            <summary>Workload config (optional)</summary>
            <div class="field">
              <label for="create-workload">Workload config (JSON object)</label>
              <textarea id="create-workload" name="workload_config" rows="3" class="mono" spellcheck="false"
                aria-describedby="create-workload-hint" value=${form.workload} onInput=${set('workload')}></textarea>
              <p id="create-workload-hint" class="hint">Keys such as <code>context_length</code> or <code>max_concurrent_sequences</code>;
                see docs/engines.md.</p>
            </div>
          </details>
          <div class="actions">
            <${Link} to="/" class="button secondary">Cancel<//>
            <button type="submit" class="button primary" disabled=${busy || choices.length === 0}>
              ${busy ? 'Creating…' : 'Create instance'}
            </button>
          </div>
        </form>`
      : null}
  </section>`;
}

function Created({ answer }) {
  const instance = answer.dedicated_inference;
  const heading = useRef();
  useEffect(() => heading.current?.focus(), []);
  return html`<section aria-labelledby="created-title" class="stack">
    <div class="page-head"><h1 id="created-title" tabindex="-1" ref=${heading}>Instance ${instance.spec.name} created</h1></div>
    <div class="card stack">
      <p>inferd accepted the instance; it is <strong>${instance.status}</strong> and becomes <strong>active</strong> once its
        replicas are ready.</p>
      <div class="field">
        <label for="created-token">Access token for its endpoints (shown once)</label>
        <div class="input-row">
          <input id="created-token" readonly class="mono" value=${answer.token.value} aria-describedby="created-token-hint" />
          <${CopyButton} text=${answer.token.value} what="access token" />
        </div>
        <p id="created-token-hint" class="hint">Copy it now: inferd keeps only its hash. The playground of this tab
          already has it. Make more in the instance's Tokens tab.</p>
      </div>
      <div class="actions">
        <${Link} to="/" class="button secondary">Back to instances<//>
        <${Link} to=${`/instances/${instance.id}`} class="button primary">Open ${instance.spec.name}<//>
      </div>
    </div>
  </section>`;
}
