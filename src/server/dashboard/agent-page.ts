import { html } from 'hono/html';
import type { AgentRow } from '../db/agent-repository.ts';
import type { DeploymentRow } from '../db/deployment-repository.ts';
import { deploymentsTable } from './deployments-table.ts';
import { formatBytes, iso, kindLabel, timeAgo } from './format.ts';
import { approvalBadge, badge, type Html, layout } from './layout.ts';
import { rollbackForm } from './rollback-form.ts';
import type { Session } from './session-store.ts';
import { sizeChart } from './size-chart.ts';
import { tagList } from './tag-list.ts';

/** One agent: what it runs (generation, kind, closure size), its size over time, its history. */
export function agentPage(options: {
  session: Session;
  agent: AgentRow;
  tags: readonly string[];
  history: readonly DeploymentRow[];
  closureSize: number | null;
  canRollback: boolean;
  now: number;
}): Html {
  const { agent: a, history, now } = options;
  const points = history
    .filter((d) => d.closure_nar_size !== null)
    .map((d) => ({ id: d.id, at: d.created_at, size: Number(d.closure_nar_size) }))
    .reverse();
  return layout({
    title: a.name,
    session: options.session,
    body: html`<h1>Agent ${a.name}</h1>
<div id="agent" data-refresh="5">
<dl class="facts">
<dt>Status</dt><dd>${badge(a.online === 1 ? 'online' : 'offline', 'agent-status')}${approvalBadge(a.pending_since)} <span class="muted">last seen <time datetime="${iso(a.last_seen_at)}">${a.online === 1 ? 'now' : timeAgo(a.last_seen_at, now)}</time></span></dd>
<dt>Tags</dt><dd id="tags">${tagList(options.tags)}</dd>
${a.enrolled_with === null ? '' : html`<dt>Enrolled</dt><dd id="enrolled">with enrolment token ${a.enrolled_with}, <time datetime="${iso(a.created_at)}">${timeAgo(a.created_at, now)}</time>${a.pending_since === null ? '' : html`; waiting for <code>cairn agent approve ${a.name}</code>`}</dd>`}
<dt>Runs</dt><dd class="mono" id="current-path">${a.store_path ?? '–'}</dd>
<dt>Generation</dt><dd id="generation">${a.generation ?? '–'}</dd>
<dt>Kind</dt><dd>${kindLabel(a.kind)}</dd>
<dt>Closure size</dt><dd>${formatBytes(options.closureSize)}</dd>
<dt>Profile</dt><dd class="mono">${a.profile ?? '–'}</dd>
<dt>Machine</dt><dd>${a.hostname ?? '–'} <span class="muted">${a.system ?? ''}</span></dd>
<dt>Versions</dt><dd>agent ${a.agent_version ?? '–'}, ${a.nix_version ?? 'nix –'}</dd>
</dl>
${options.canRollback ? html`<div class="actions">${rollbackForm({ agent: a.name, csrf: options.session.csrf })}</div>` : ''}
<h2>Closure size</h2>
${sizeChart(points)}
<h2>Deployments</h2>
${deploymentsTable(history, { now, showAgent: false })}
</div>`,
  });
}
