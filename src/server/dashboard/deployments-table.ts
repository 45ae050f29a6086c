import { html } from 'hono/html';
import type { DeploymentRow } from '../db/deployment-repository.ts';
import { duration, formatBytes, iso, shortPath, timeAgo } from './format.ts';
import { badge, type Html } from './layout.ts';

/** A table of deployments, newest first, linking each to its page. */
export function deploymentsTable(
  rows: readonly DeploymentRow[],
  options: { now: number; showAgent: boolean },
): Html {
  if (rows.length === 0) return html`<p class="muted">No deployments yet.</p>`;
  return html`<div class="table-wrap"><table>
<thead><tr><th>#</th>${options.showAgent ? html`<th>Agent</th>` : ''}<th>State</th><th>Kind</th><th>Created</th><th class="num">Duration</th><th class="num">Closure</th><th class="opt">Store path</th></tr></thead>
<tbody>
${rows.map(
  (d) => html`<tr data-deployment="${d.id}">
<td><a href="/deployments/${d.id}">#${d.id}</a></td>
${options.showAgent ? html`<td><a href="/agents/${d.agent_name}">${d.agent_name}</a></td>` : ''}
<td>${badge(d.state)}${d.state === 'running' && d.step ? html` <span class="muted">${d.step}</span>` : ''}</td>
<td>${d.kind}</td>
<td><time datetime="${iso(d.created_at)}">${timeAgo(d.created_at, options.now)}</time></td>
<td class="num">${duration(d.started_at, d.finished_at)}</td>
<td class="num">${formatBytes(d.closure_nar_size)}</td>
<td class="opt mono" title="${d.store_path}">${shortPath(d.store_path)}</td>
</tr>`,
)}
</tbody></table></div>`;
}
