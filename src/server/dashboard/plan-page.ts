import { html } from 'hono/html';
import {
  type MachinePlanInfo,
  planBlocked,
  planUnheard,
  type RolloutPlan,
} from '../../protocol/api-schemas.ts';
import { diffView } from './diff-view.ts';
import { formatBytes } from './format.ts';
import { type Html, layout } from './layout.ts';
import type { Session } from './session-store.ts';

type AgentPlan = RolloutPlan['agents'][number];

/** `3 upgraded, 1 added` from a diff's packages, or `no package changes`. */
function packageSummary(a: AgentPlan): string {
  const counts = new Map<string, number>();
  for (const p of a.diff.packages) counts.set(p.change, (counts.get(p.change) ?? 0) + 1);
  return counts.size === 0 ? 'no package changes' : [...counts].map(([c, n]) => `${n} ${c}`).join(', ');
}

function downloadCell(a: AgentPlan): Html {
  const m = a.machine;
  if (m?.status === 'answered' && m.download) {
    const dl = m.download;
    return html`${dl.paths.length}${m.truncated ? '+' : ''} path(s), ${formatBytes(dl.narSize)} unpacked,
${formatBytes(dl.fileSize)} compressed <span class="muted">(the machine's own count${dl.unknownSizes > 0 ? `; ${dl.unknownSizes} of unknown size` : ''})</span>
${
  m.unavailable.length > 0
    ? html`<br><strong class="bad-text">${m.unavailable.length} path(s) in no cache: the deployment would fail</strong>`
    : ''
}`;
  }
  return html`${a.download.paths} path(s), ${formatBytes(a.download.narSize)} unpacked
<span class="muted">(server-side estimate, an upper bound)</span>`;
}

function diskCell(m: MachinePlanInfo | undefined): Html {
  if (!m || m.freeBytes === null) return html`<span class="muted">–</span>`;
  return m.diskOk === false
    ? html`<strong class="bad-text">${formatBytes(m.freeBytes)} free: not enough</strong>`
    : html`${formatBytes(m.freeBytes)} free`;
}

function dryActivateCell(m: MachinePlanInfo | undefined): Html {
  const d = m?.dryActivate;
  if (!d) return html`<span class="muted">not asked</span>`;
  if (d.status === 'unsupported') return html`<span class="muted">${d.reason}</span>`;
  if (d.status === 'failed') return html`<strong class="bad-text">failed: ${d.reason}</strong>`;
  const parts = (['stop', 'restart', 'start', 'reload'] as const)
    .filter((k) => d[k].length > 0)
    .map((k) => html`<li>would ${k} <span class="mono">${d[k].join(', ')}</span></li>`);
  if (d.rebootRequired)
    parts.push(html`<li><strong>reboot required</strong> (new kernel, initrd or init system)</li>`);
  return parts.length === 0 ? html`no unit would change` : html`<ul class="plain">${parts}</ul>`;
}

function agentRow(a: AgentPlan): Html {
  const m = a.machine;
  return html`<tr data-agent="${a.agent}" class="${planBlocked(m) ? 'blocked' : planUnheard(m) ? 'unheard' : ''}">
<td><a href="/agents/${a.agent}">${a.agent}</a></td>
<td>${m ? m.message : html`<span class="muted">not asked</span>`}</td>
${
  a.unchanged
    ? html`<td colspan="4">already runs <span class="mono">${a.proposed.storePath}</span>: nothing to do</td>`
    : html`<td><details><summary>${packageSummary(a)}</summary>${diffView(a.diff)}</details></td>
<td>${downloadCell(a)}</td><td>${diskCell(m)}</td><td>${dryActivateCell(m)}</td>`
}
</tr>`;
}

/**
 * What the next batch of a rollout would do on its machines, before it opens: per agent the
 * package diff, the download (exact when its machine answered), its free disk space and, when
 * asked, NixOS's dry-activate. The same plan as `cairn deploy plan` (issue #20).
 */
export function planPage(options: {
  session: Session;
  rolloutId: number;
  /** Which deployments were planned, as people read it: `batch 2 of 3 (40 agents)`. */
  scope: string;
  plan: RolloutPlan;
  dryActivate: boolean;
  /** Agents of that batch left out (over the page's limit). */
  leftOut: number;
}): Html {
  const { plan, rolloutId } = options;
  const machines = plan.agents.map((a) => a.machine);
  const nBlocked = machines.filter(planBlocked).length;
  const unheard = machines.filter(planUnheard).length;
  const verdict =
    nBlocked > 0
      ? html`<p class="callout bad" id="plan-verdict">${nBlocked} machine(s) report something that would make the deployment fail.</p>`
      : unheard > 0
        ? html`<p class="callout warn" id="plan-verdict">${unheard} machine(s) did not answer: their part is the server's estimate.</p>`
        : html`<p class="callout" id="plan-verdict">Every machine answered; nothing stands in the way.</p>`;
  return layout({
    title: `Plan for rollout #${rolloutId}`,
    session: options.session,
    body: html`<h1>Plan for rollout #${rolloutId}</h1>
<p>What ${options.scope} would do, as ${options.dryActivate ? 'the machines said it, with dry-activate' : 'the machines said it'}.
Nothing was changed on them. <a href="/rollouts/${rolloutId}">Back to the rollout</a>.</p>
${verdict}
${options.leftOut > 0 ? html`<p class="muted">${options.leftOut} more agent(s) of it were not planned here; <code>cairn deploy plan</code> plans any number.</p>` : ''}
<div class="table-wrap"><table id="plan">
<thead><tr><th>Agent</th><th>Machine</th><th>Packages</th><th>Download</th><th>Disk</th><th>Dry-activate</th></tr></thead>
<tbody>
${plan.agents.map(agentRow)}
</tbody></table></div>`,
  });
}
