// node --test: the arithmetic behind the charts.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { GAP_SECONDS, POLL_SECONDS, WINDOW_SECONDS, addSample, formatNumber, histogramQuantile, rates, summarize } from '../src/metrics.js';

function sample(t, requests, completion, ttftCount, ttftSum, extra = {}) {
  return {
    sampled_at: t,
    available: true,
    requests_total: requests,
    errors_total: extra.errors ?? 0,
    rate_limited_total: extra.limited ?? 0,
    prompt_tokens_total: 0,
    completion_tokens_total: completion,
    ttft_seconds: {
      count: ttftCount,
      sum: ttftSum,
      buckets: extra.buckets ?? [
        { le: 0.1, count: ttftCount },
        { le: '+Inf', count: ttftCount },
      ],
    },
  };
}

test('rates are differences over the time between samples', () => {
  const r = rates([sample(100, 10, 100, 10, 1.0), sample(102, 14, 160, 14, 1.8, { errors: 2 }), sample(104, 14, 160, 14, 1.8, { errors: 2 })]);
  assert.deepEqual(r.t, [102, 104]);
  assert.deepEqual(r.requests, [2, 0]);
  assert.deepEqual(r.tokens, [30, 0]);
  assert.deepEqual(r.errors, [1, 0]);
  assert.ok(Math.abs(r.ttftMean[0] - 200) < 1e-9); // 0.8 s over 4 first tokens
  assert.equal(r.ttftMean[1], null); // no request in the interval: blank, not 0
});

test('a counter that goes down (gateway restart) or a long pause draws a gap', () => {
  const r = rates([sample(100, 50, 500, 50, 5), sample(102, 3, 30, 3, 0.3), sample(104, 5, 40, 5, 0.5), sample(200, 9, 80, 9, 0.9)]);
  assert.deepEqual(r.requests, [null, 1, null]);
  assert.deepEqual(r.ttftMean.map((v) => (v === null ? null : Math.round(v))), [null, 100, null]);
});

test('a poll a little late is no gap; one missed for longer (hidden tab, 429) is', () => {
  const late = POLL_SECONDS + 2; // the next poll starts POLL_SECONDS after the previous answer
  const r = rates([sample(0, 0, 0, 0, 0), sample(late, 7, 0, 0, 0), sample(late + GAP_SECONDS + 1, 7, 0, 0, 0)]);
  assert.deepEqual(r.requests, [1, null]);
  assert.ok(GAP_SECONDS >= 2 * POLL_SECONDS);
});

test('p95 of the interval comes from the difference of cumulative buckets', () => {
  const buckets = (a, b, c) => [
    { le: 0.05, count: a },
    { le: 0.1, count: b },
    { le: '+Inf', count: c },
  ];
  const before = sample(0, 0, 0, 0, 0, { buckets: buckets(0, 0, 0) });
  const after = sample(2, 20, 0, 20, 1.2, { buckets: buckets(10, 20, 20) });
  const r = rates([before, after]);
  // rank 19 of 20 falls in (0.05, 0.1]: 0.05 + 0.05 * (19 - 10) / 10 = 0.095 s
  assert.ok(Math.abs(r.ttftP95[0] - 95) < 1e-9);
  assert.equal(histogramQuantile(buckets(0, 0, 0), 0.95), null);
  assert.equal(histogramQuantile(buckets(0, 0, 4), 0.5), 0.1); // beyond the last finite bound
});

test('samples are kept for the window, in order, without duplicates', () => {
  let samples = [];
  for (let t = 0; t <= 2000; t += POLL_SECONDS) samples = addSample(samples, sample(t, t, t, 0, 0));
  assert.ok(samples[samples.length - 1].sampled_at === 2000);
  assert.ok(samples[0].sampled_at >= 2000 - WINDOW_SECONDS - GAP_SECONDS);
  assert.ok(samples[0].sampled_at <= 2000 - WINDOW_SECONDS); // the whole window is drawn
  assert.equal(WINDOW_SECONDS, 600);
  assert.equal(addSample(samples, sample(2000, 0, 0, 0, 0)), samples);
});

test('summaries and formatting', () => {
  assert.deepEqual(summarize([null, 1, 3, null]), { now: null, peak: 3 });
  assert.deepEqual(summarize([]), { now: null, peak: null });
  assert.equal(formatNumber(null), '–');
  assert.equal(formatNumber(0), '0');
  assert.equal(formatNumber(0.5), '0.50');
  assert.equal(formatNumber(1234.5), '1235');
});
