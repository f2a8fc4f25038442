// Live traffic charts of one instance (uPlot), fed by polling the metrics endpoint.
import { useEffect, useRef, useState } from 'preact/hooks';
import uPlot from 'uplot';
import { api } from './api.js';
import { html } from './html.js';
import { POLL_SECONDS, WINDOW_SECONDS, addSample, formatNumber, rates, summarize } from './metrics.js';
import { ErrorMessage, usePoll } from './ui.js';

/** Samples per instance, kept while the tab lives so that leaving a page keeps its history. */
const history = new Map();

/**
 * Poll the instance's counters every POLL_SECONDS (not while the tab is hidden nor while the API
 * refuses the token with 429): {samples, latest, unavailable, error}.
 */
export function useMetrics(id) {
  const { data, error } = usePoll(() => api.metrics(id), POLL_SECONDS * 1000, [id]);
  const [samples, setSamples] = useState(() => history.get(id) ?? []);
  useEffect(() => {
    if (!data || data.available === false) return;
    const next = addSample(history.get(id) ?? [], data);
    history.set(id, next);
    setSamples(next);
  }, [data]);
  const unavailable = data?.available === false ? data.message || 'The gateway metrics could not be read.' : null;
  return { samples, latest: unavailable ? null : data ?? null, unavailable, error };
}

function cssColor(name, fallback) {
  const value = getComputedStyle(document.documentElement).getPropertyValue(name).trim();
  return value || fallback;
}

/**
 * The x range: the window up to the last sample, at least a minute wide. Read from the data, not
 * from uPlot's min and max: with a single point uPlot pads those far around it (years, for epoch
 * seconds), which drew the first point off the chart under a date in the future.
 */
function timeRange(u) {
  const t = u.data[0];
  const last = t.length ? t[t.length - 1] : Date.now() / 1000;
  const start = Math.max(t.length ? t[0] : last, last - WINDOW_SECONDS);
  return last - start < 60 ? [last - 60, last] : [start, last];
}

/** One chart: a figure whose caption says the numbers (the canvas is decoration for AT). */
function Chart({ metric, title, unit, t, series, digits = 2 }) {
  const box = useRef();
  const plot = useRef();
  const main = summarize(series[0].values);

  useEffect(() => {
    const element = box.current;
    const options = {
      width: Math.max(element.clientWidth, 200),
      height: 150,
      legend: { show: false },
      cursor: { show: true, drag: { x: false, y: false }, points: { show: false } },
      scales: {
        x: { time: true, range: timeRange },
        y: { range: (_u, _min, max) => [0, max > 0 ? max * 1.15 : 1] },
      },
      axes: [
        { stroke: cssColor('--muted', '#555'), grid: { stroke: cssColor('--grid', '#e5e7eb'), width: 1 }, ticks: { show: false } },
        {
          stroke: cssColor('--muted', '#555'),
          grid: { stroke: cssColor('--grid', '#e5e7eb'), width: 1 },
          ticks: { show: false },
          size: 48,
          values: (_u, ticks) => ticks.map((v) => formatNumber(v, digits)),
        },
      ],
      series: [
        {},
        ...series.map((s) => ({
          label: s.label,
          stroke: cssColor(s.color, '#0b57d0'),
          width: 2,
          fill: s.fill ? cssColor(s.fill, undefined) : undefined,
          spanGaps: false,
          points: { show: true, size: 5 },
        })),
      ],
    };
    plot.current = new uPlot(options, [t, ...series.map((s) => s.values)], element);
    const observer = new ResizeObserver(() => {
      const width = Math.max(element.clientWidth, 200);
      if (plot.current && plot.current.width !== width) plot.current.setSize({ width, height: 150 });
    });
    observer.observe(element);
    return () => {
      observer.disconnect();
      plot.current?.destroy();
      plot.current = null;
    };
  }, []);

  useEffect(() => {
    plot.current?.setData([t, ...series.map((s) => s.values)]);
  });

  return html`<figure class="chart" data-metric=${metric} data-peak=${main.peak ?? ''} data-points=${t.length}>
    <figcaption>
      <span class="chart-title">${title}</span>
      <span class="chart-values">
        ${series.map(
          (s, index) => {
            const { now, peak } = index === 0 ? main : summarize(s.values);
            return html`<span class="chart-value" key=${s.label}>
              <span class="swatch swatch-${index}" aria-hidden="true"></span>${s.label}: now ${formatNumber(now, digits)}${unit},
              peak ${formatNumber(peak, digits)}${unit}
            </span>`;
          },
        )}
      </span>
    </figcaption>
    <div class="chart-canvas" ref=${box} aria-hidden="true"></div>
  </figure>`;
}

function totals(m) {
  return (
    `Since the gateway started: ${m.requests_total} requests, ${m.errors_total} errors, ` +
    `${m.rate_limited_total} rate-limited, ${m.prompt_tokens_total} prompt and ${m.completion_tokens_total} completion tokens.`
  );
}

/** The four charts of an instance, or why there are none. */
export function TrafficCharts({ metrics }) {
  const { samples, latest, unavailable, error } = metrics;
  const series = rates(samples);
  return html`<section class="card" aria-labelledby="charts-title">
    <div class="section-head">
      <h2 id="charts-title">Traffic</h2>
      <p class="muted small">Last ${WINDOW_SECONDS / 60} minutes, sampled every ${POLL_SECONDS} s while this page is open.</p>
    </div>
    ${unavailable ? html`<p class="notice" role="status">Charts unavailable: ${unavailable}</p>` : null}
    <${ErrorMessage} error=${error} prefix="Could not read the metrics" />
    ${!unavailable
      ? html`
          ${series.t.length === 0 ? html`<p class="muted" role="status">Collecting samples: the first rates appear after two polls.</p>` : null}
          <div class="charts">
            <${Chart} metric="requests" title="Requests per second" unit="/s" t=${series.t}
              series=${[{ label: 'requests', values: series.requests, color: '--chart-1', fill: '--chart-1-fill' }]} />
            <${Chart} metric="ttft" title="Time to first token" unit=" ms" t=${series.t} digits=${0}
              series=${[
                { label: 'mean', values: series.ttftMean, color: '--chart-2' },
                { label: 'p95', values: series.ttftP95, color: '--chart-3' },
              ]} />
            <${Chart} metric="tokens" title="Completion tokens per second" unit="/s" t=${series.t} digits=${1}
              series=${[{ label: 'tokens', values: series.tokens, color: '--chart-4', fill: '--chart-4-fill' }]} />
            <${Chart} metric="errors" title="Errors per second" unit="/s" t=${series.t}
              series=${[
                { label: 'errors', values: series.errors, color: '--chart-5' },
                { label: 'rate-limited', values: series.rateLimited, color: '--chart-3' },
              ]} />
          </div>
          ${latest
            ? html`<p class="muted small" id="traffic-totals">${totals(latest)}</p>`
            : null}
        `
      : null}
  </section>`;
}
