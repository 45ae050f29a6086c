import { html } from 'hono/html';
import { formatBytes } from './format.ts';
import type { Html } from './layout.ts';

/**
 * A line chart of closure sizes over time as inline SVG: no chart service, no script. Points
 * are evenly spaced by deployment (not by time), so a burst of deployments stays readable.
 */
export function sizeChart(points: ReadonlyArray<{ id: number; at: number; size: number }>): Html {
  if (points.length === 0) return html`<p class="muted">No closure sizes reported yet.</p>`;
  const w = 720;
  const h = 200;
  const pad = { l: 70, r: 12, t: 12, b: 28 };
  const max = Math.max(...points.map((p) => p.size));
  const min = Math.min(...points.map((p) => p.size));
  // Leave room above and below so that a flat series is a line in the middle, not on an edge.
  const span = max - min || Math.max(max, 1);
  const lo = Math.max(0, min - span * 0.1);
  const hi = max + span * 0.1;
  const x = (i: number) =>
    pad.l + (points.length === 1 ? (w - pad.l - pad.r) / 2 : (i * (w - pad.l - pad.r)) / (points.length - 1));
  const y = (v: number) => pad.t + (1 - (v - lo) / (hi - lo)) * (h - pad.t - pad.b);
  const line = points.map((p, i) => `${x(i).toFixed(1)},${y(p.size).toFixed(1)}`).join(' ');
  const first = new Date(points[0]!.at).toISOString().slice(0, 10);
  const last = new Date(points.at(-1)!.at).toISOString().slice(0, 10);
  return html`<svg class="chart" viewBox="0 0 ${w} ${h}" role="img" aria-label="Closure size over the last ${points.length} deployments, from ${formatBytes(points[0]!.size)} to ${formatBytes(points.at(-1)!.size)}">
<line class="axis" x1="${pad.l}" y1="${h - pad.b}" x2="${w - pad.r}" y2="${h - pad.b}"></line>
<line class="axis" x1="${pad.l}" y1="${pad.t}" x2="${pad.l}" y2="${h - pad.b}"></line>
<text x="${pad.l - 6}" y="${y(max) + 4}" text-anchor="end">${formatBytes(max)}</text>
<text x="${pad.l - 6}" y="${y(min) + 4}" text-anchor="end">${formatBytes(min)}</text>
<text x="${pad.l}" y="${h - 8}">${first}</text>
<text x="${w - pad.r}" y="${h - 8}" text-anchor="end">${last}</text>
<polyline class="series" points="${line}"></polyline>
${points.map(
  (p, i) =>
    html`<a href="/deployments/${p.id}"><circle class="dot" cx="${x(i).toFixed(1)}" cy="${y(p.size).toFixed(1)}" r="3.5"><title>#${p.id}: ${formatBytes(p.size)}</title></circle></a>`,
)}
</svg>`;
}
