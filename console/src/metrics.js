// Pure arithmetic on the metrics endpoint's counters (no DOM): samples in, rates out.
//
// GET /v2/dedicated-inferences/{id}/metrics returns totals since the gateway started. A rate is
// the difference of two samples over the time between them; TTFT over an interval is the
// histogram's Δsum/Δcount (blank when no request started streaming in it), and its p95 is read
// from the Δ of the cumulative buckets as Prometheus' histogram_quantile() does.

/** The charts show the last ten minutes. */
export const WINDOW_SECONDS = 600;
/** One sample every 5 s: 12 API requests a minute per open instance page (see docs/console.md). */
export const POLL_SECONDS = 5;
/**
 * Two samples further apart than this (the tab was hidden, the API refused polls with 429) draw
 * a gap, not a long average. Polls start some time after the previous answer, so a few seconds
 * late is normal.
 */
export const GAP_SECONDS = 3 * POLL_SECONDS;

/** samples plus a new one, in time order, trimmed to the window (a copy; inputs unchanged). */
export function addSample(samples, sample) {
  const last = samples[samples.length - 1];
  if (last && sample.sampled_at <= last.sampled_at) return samples;
  const oldest = sample.sampled_at - WINDOW_SECONDS - GAP_SECONDS;
  return [...samples.filter((s) => s.sampled_at >= oldest), sample];
}

function bound(le) {
  return le === '+Inf' || le === 'Inf' ? Infinity : Number(le);
}

/** The q-quantile (0..1) of a histogram given as cumulative buckets [{le, count}], or null. */
export function histogramQuantile(buckets, q) {
  const sorted = [...buckets].map((b) => ({ le: bound(b.le), count: b.count })).sort((a, b) => a.le - b.le);
  const total = sorted.length ? sorted[sorted.length - 1].count : 0;
  if (!total) return null;
  const rank = q * total;
  let previousLe = 0;
  let previousCount = 0;
  for (const bucket of sorted) {
    if (bucket.count >= rank) {
      if (bucket.le === Infinity) return previousLe; // beyond the last finite bound: its bound is the best answer
      const inBucket = bucket.count - previousCount;
      if (inBucket <= 0) return bucket.le;
      return previousLe + ((bucket.le - previousLe) * (rank - previousCount)) / inBucket;
    }
    previousLe = bucket.le;
    previousCount = bucket.count;
  }
  return previousLe;
}

function bucketDelta(before, after) {
  const earlier = new Map((before ?? []).map((b) => [String(b.le), b.count]));
  return (after ?? []).map((b) => ({ le: b.le, count: b.count - (earlier.get(String(b.le)) ?? 0) }));
}

const COUNTERS = ['requests_total', 'errors_total', 'rate_limited_total', 'prompt_tokens_total', 'completion_tokens_total'];

/**
 * Series for the charts: x = time of the later sample of each pair (epoch seconds), and per
 * second rates; null where the interval has no value (a gap, a counter reset, no TTFT).
 */
export function rates(samples) {
  const out = { t: [], requests: [], tokens: [], errors: [], rateLimited: [], ttftMean: [], ttftP95: [] };
  for (let i = 1; i < samples.length; i += 1) {
    const a = samples[i - 1];
    const b = samples[i];
    const dt = b.sampled_at - a.sampled_at;
    if (!(dt > 0)) continue;
    const ttftCount = (b.ttft_seconds?.count ?? 0) - (a.ttft_seconds?.count ?? 0);
    const reset = COUNTERS.some((key) => (b[key] ?? 0) < (a[key] ?? 0)) || ttftCount < 0;
    out.t.push(b.sampled_at);
    if (reset || dt > GAP_SECONDS) {
      for (const key of ['requests', 'tokens', 'errors', 'rateLimited', 'ttftMean', 'ttftP95']) out[key].push(null);
      continue;
    }
    out.requests.push((b.requests_total - a.requests_total) / dt);
    out.tokens.push((b.completion_tokens_total - a.completion_tokens_total) / dt);
    out.errors.push((b.errors_total - a.errors_total) / dt);
    out.rateLimited.push(((b.rate_limited_total ?? 0) - (a.rate_limited_total ?? 0)) / dt);
    if (ttftCount > 0) {
      out.ttftMean.push((1000 * (b.ttft_seconds.sum - a.ttft_seconds.sum)) / ttftCount);
      const p95 = histogramQuantile(bucketDelta(a.ttft_seconds.buckets, b.ttft_seconds.buckets), 0.95);
      out.ttftP95.push(p95 === null ? null : 1000 * p95);
    } else {
      out.ttftMean.push(null);
      out.ttftP95.push(null);
    }
  }
  return out;
}

/** {now, peak} of a series: the last value (null if blank) and the largest one (null if none). */
export function summarize(values) {
  const present = values.filter((v) => v !== null && Number.isFinite(v));
  return {
    now: values.length ? values[values.length - 1] : null,
    peak: present.length ? Math.max(...present) : null,
  };
}

/** A number for people: few digits, no trailing noise. */
export function formatNumber(value, digits = 2) {
  if (value === null || value === undefined || !Number.isFinite(value)) return '–';
  if (value === 0) return '0';
  if (Math.abs(value) >= 100) return value.toFixed(0);
  return value.toFixed(digits);
}
