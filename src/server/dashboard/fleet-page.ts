import { html } from 'hono/html';
import { DEPLOYMENT_STATES } from '../../protocol/deployment-state.ts';
import type { FleetRow } from './dashboard-queries.ts';
import { formatBytes, iso, kindLabel, shortPath, timeAgo } from './format.ts';
import { approvalBadge, badge, type Html, layout } from './layout.ts';
import type { Session } from './session-store.ts';
import { tagList } from './tag-list.ts';

/** What the fleet can be filtered by: online status or the newest deployment's state. */
export const FLEET_STATUSES: readonly string[] = ['online', 'offline', ...DEPLOYMENT_STATES];

/** Keeps the rows whose name contains `q` and whose status is `status` (either may be empty). */
export function filterFleet(rows: readonly FleetRow[], q: string, status: string): FleetRow[] {
  const needle = q.trim().toLowerCase();
  return rows.filter((r) => {
    if (needle && !r.agent.name.includes(needle)) return false;
    if (status === 'online') return r.agent.online === 1;
    if (status === 'offline') return r.agent.online !== 1;
    if (status) return r.deployment?.state === status;
    return true;
  });
}

/** The fleet: every agent, online or not, what it runs, and its newest deployment. */
export function fleetPage(options: {
  session: Session;
  rows: readonly FleetRow[];
  total: number;
  q: string;
  status: string;
  now: number;
}): Html {
  const { rows, q, status, now } = options;
  const online = rows.filter((r) => r.agent.online === 1).length;
  return layout({
    title: 'Fleet',
    session: options.session,
    body: html`<h1>Fleet</h1>
<form class="filters" method="get" action="/" role="search">
  <input type="search" name="q" value="${q}" placeholder="Filter by name" aria-label="Filter by name">
  <select name="status" aria-label="Filter by state">
    <option value="">any state</option>
    ${FLEET_STATUSES.map((s) => html`<option value="${s}"${s === status ? ' selected' : ''}>${s}</option>`)}
  </select>
  <button type="submit">Filter</button>
  ${q || status ? html`<a href="/">clear</a>` : ''}
</form>
<div id="fleet" data-refresh="5">
<p class="muted">${rows.length} of ${options.total} agent(s) shown, ${online} online.</p>
<div class="table-wrap"><table>
<thead><tr><th>Agent</th><th class="opt">Tags</th><th>Status</th><th>Last seen</th><th>Kind</th><th>Deployment</th><th>State</th><th class="num">Closure</th><th class="opt">Runs</th></tr></thead>
<tbody>
${rows.map((r) => {
  const a = r.agent;
  const d = r.deployment;
  return html`<tr data-agent="${a.name}">
<td><a href="/agents/${a.name}">${a.name}</a></td>
<td class="opt tags">${tagList(r.tags)}</td>
<td>${badge(a.online === 1 ? 'online' : 'offline')}${approvalBadge(a.pending_since)}</td>
<td><time datetime="${iso(a.last_seen_at)}">${a.online === 1 ? 'now' : timeAgo(a.last_seen_at, now)}</time></td>
<td>${kindLabel(a.kind)}</td>
<td>${d ? html`<a href="/deployments/${d.id}">#${d.id}</a>` : html`<span class="muted">none</span>`}</td>
<td>${d ? badge(d.state) : ''}${d?.state === 'running' && d.step ? html` <span class="muted">${d.step}</span>` : ''}</td>
<td class="num">${formatBytes(r.closureSize)}</td>
<td class="opt mono" title="${a.store_path ?? ''}">${shortPath(a.store_path)}</td>
</tr>`;
})}
</tbody></table></div>
</div>`,
  });
}
