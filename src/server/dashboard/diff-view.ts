import { html } from 'hono/html';
import type { ClosureDiffInfo, DeploymentDiff } from '../../protocol/api-schemas.ts';
import { formatBytes, formatDelta } from './format.ts';
import type { Html } from './layout.ts';

const ORDER = ['upgraded', 'downgraded', 'changed', 'added', 'removed', 'rebuilt'];
const versions = (v: readonly string[]) => (v.length === 0 ? '–' : v.map((x) => x || '<none>').join(', '));

/** A closure diff as a table of packages (nvd's view), with the totals on top. */
export function diffView(diff: ClosureDiffInfo): Html {
  const packages = [...diff.packages].sort(
    (a, b) => ORDER.indexOf(a.change) - ORDER.indexOf(b.change) || (a.pname < b.pname ? -1 : 1),
  );
  return html`<p class="summary">Closure: ${diff.before.paths} → ${diff.after.paths} paths
(${diff.pathsAdded} added, ${diff.pathsRemoved} removed),
${formatBytes(diff.before.narSize)} → ${formatBytes(diff.after.narSize)}
(<strong>${formatDelta(diff.narSizeDelta)}</strong>).</p>
${
  packages.length === 0
    ? html`<p class="muted">No package changes.</p>`
    : html`<div class="table-wrap"><table class="diff">
<thead><tr><th>Change</th><th>Package</th><th>Before</th><th>After</th><th class="num">Size</th></tr></thead>
<tbody>
${packages.map(
  (p) => html`<tr class="chg-${p.change}" data-pname="${p.pname}">
<td>${p.change}</td><td><strong>${p.pname}</strong></td>
<td class="mono">${versions(p.before.versions)}</td><td class="mono">${versions(p.after.versions)}</td>
<td class="num">${formatDelta(p.narSizeDelta)}</td></tr>`,
)}
</tbody></table></div>`
}`;
}

/** Says where each side of a diff came from when it is not exact. */
export function diffSources(d: DeploymentDiff): Html {
  const note = (label: string, s: DeploymentDiff['from']) =>
    s.source === 'cache' && s.missing > 0
      ? html`<li>${label}: incomplete, ${s.missing} path(s) in no cache and not reported by its agent</li>`
      : s.source === 'agent'
        ? html`<li>${label}: as agent ${s.reportedBy ?? s.agent ?? ''} reported it, not verified (the caches do not hold all of it)</li>`
        : s.source === 'none'
          ? html`<li>${label}: nothing (first deployment)</li>`
          : '';
  const items = [note('Before', d.from), note('After', d.to)].filter((x) => x !== '');
  return items.length === 0 ? html`` : html`<ul class="muted">${items}</ul>`;
}
