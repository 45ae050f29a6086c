import { html } from 'hono/html';
import type { StagedRollout } from '../../protocol/api-schemas.ts';
import { type Amount, formatAmount } from '../../protocol/rollout-policy.ts';
import type { DeploymentRow } from '../db/deployment-repository.ts';
import { agentRolloutState } from '../rollouts/rollout-snapshot.ts';
import { duration, iso } from './format.ts';
import { badge, type Html } from './layout.ts';

/** A policy duration in milliseconds as deploy.json writes it: `0`, `30s`, `15m`, `2h`, `1d`. */
export function formatMs(ms: unknown): string {
  if (typeof ms !== 'number') return '–';
  for (const [unit, size] of [
    ['d', 86_400_000],
    ['h', 3_600_000],
    ['m', 60_000],
  ] as const) {
    if (ms >= size && ms % size === 0) return `${ms / size}${unit}`;
  }
  return ms === 0 ? '0' : `${ms / 1000}s`;
}

const ON_FAILURE: Record<string, string> = {
  halt: 'halts (stops dispatching; the rollout fails)',
  pause: 'pauses (resume to go on)',
  revert: 'fails and rolls back every agent it switched',
};

function thresholdText(policy: Record<string, unknown>): string {
  const t = policy.failureThreshold as { max?: Amount; minSample?: number } | undefined;
  if (!t?.max) return '–';
  const max = 'percent' in t.max ? `${formatAmount(t.max)} of the decided agents` : formatAmount(t.max);
  return `${max} failed, once ${t.minSample ?? '?'} are decided (or every agent, if fewer); any canary failure at once`;
}

/**
 * The staged part of a rollout page: its state, why it waits (prominently), the batches, the
 * failure threshold against its counts, and where each agent stands.
 */
export function stagedRolloutView(options: {
  staged: StagedRollout;
  deployments: readonly DeploymentRow[];
  controls: Html;
}): Html {
  const { staged: s, deployments } = options;
  const p = s.policy;
  return html`<section class="staged" aria-label="Staged rollout">
<p class="summary">Staged rollout ${badge(s.state, 'rollout-state')}${
    s.batch < 0
      ? ''
      : html` <span class="muted">${s.finishedAt ? 'reached ' : ''}batch ${s.batch + 1} of ${s.batches.length}${s.finishedAt ? '' : ' open'}</span>`
  }${s.finishedAt ? html` <span class="muted">· ended <time datetime="${s.finishedAt}">${s.finishedAt.replace('T', ' ').slice(0, 19)} UTC</time></span>` : ''}</p>
${s.waiting ? html`<p class="callout" id="rollout-waiting" role="status"><strong>Waits:</strong> ${s.waiting}</p>` : ''}
${s.reason ? html`<p class="callout ${s.state === 'paused' ? 'warn' : 'bad'}" id="rollout-reason"><strong>${s.state === 'paused' ? 'Paused:' : 'Why it ended:'}</strong> ${s.reason}</p>` : ''}
${options.controls}
<h2 id="batches-h">Batches</h2>
<div class="table-wrap"><table aria-labelledby="batches-h" id="batches">
<thead><tr><th class="num">#</th><th>Size</th><th>Gate</th><th class="num">Agents</th><th>State</th><th class="opt">Opened</th></tr></thead>
<tbody>
${s.batches.map(
  (b) => html`<tr data-batch="${b.index}"${b.index === s.batch ? html` aria-current="step"` : ''}>
<td class="num">${b.index + 1}</td><td>${b.label}</td><td>${b.advance === 'manual' ? html`<strong>manual</strong> <span class="muted">(waits for promote)</span>` : 'auto'}</td>
<td class="num">${b.agents}</td><td>${badge(b.state)}</td>
<td class="opt">${b.openedAt ? html`<time datetime="${b.openedAt}">${b.openedAt.replace('T', ' ').slice(0, 19)} UTC</time>` : '–'}</td>
</tr>`,
)}
</tbody></table></div>
<h2>Threshold and policy</h2>
<dl class="facts" id="threshold">
<dt>Failed</dt><dd><strong id="threshold-failed">${s.failed}</strong> of <span id="threshold-decided">${s.decided}</span> decided</dd>
<dt>Trips at</dt><dd>${thresholdText(p)}</dd>
<dt>On failure</dt><dd>${ON_FAILURE[String(p.onFailure)] ?? String(p.onFailure ?? '–')}</dd>
<dt>Deferred</dt><dd id="deferred">${s.deferred} <span class="muted">(offline when their batch opened: ${String(p.offline ?? '–')})</span></dd>
<dt>Timing</dt><dd>bake ${formatMs(p.bake)}, agent timeout ${formatMs(p.agentTimeout)}, batch deadline ${formatMs(p.batchDeadline)}${typeof p.maxParallel === 'number' && p.maxParallel > 0 ? `, at most ${p.maxParallel} at a time` : ''}</dd>
</dl>
<h2 id="agents-h">Agents</h2>
${agentsTable(deployments)}
</section>`;
}

function agentsTable(rows: readonly DeploymentRow[]): Html {
  if (rows.length === 0) return html`<p class="muted">No agents.</p>`;
  const sorted = [...rows].sort((a, b) => (a.batch ?? 0) - (b.batch ?? 0) || a.id - b.id);
  return html`<div class="table-wrap"><table aria-labelledby="agents-h">
<thead><tr><th>Agent</th><th class="num">Batch</th><th>In rollout</th><th>Deployment</th><th class="num">Duration</th><th class="opt">Created</th></tr></thead>
<tbody>
${sorted.map((d) => {
  const state = agentRolloutState({
    state: d.state,
    outcome: d.outcome,
    dispatchedAt: d.dispatched_at,
    deferredAt: d.deferred_at,
    counted: d.counted === 1,
  });
  return html`<tr data-deployment="${d.id}" data-agent="${d.agent_name}">
<td><a href="/agents/${d.agent_name}">${d.agent_name}</a></td>
<td class="num">${d.batch === null ? '–' : d.batch + 1}</td>
<td data-rollout-state="${state}">${badge(state)}</td>
<td><a href="/deployments/${d.id}">#${d.id}</a> ${badge(d.state)}${d.state === 'running' && d.step ? html` <span class="muted">${d.step}</span>` : ''}${d.reason && d.state !== 'succeeded' ? html` <span class="muted">${d.reason}</span>` : ''}</td>
<td class="num">${duration(d.started_at, d.finished_at)}</td>
<td class="opt"><time datetime="${iso(d.created_at)}">${iso(d.created_at).replace('T', ' ').slice(0, 19)} UTC</time></td>
</tr>`;
})}
</tbody></table></div>`;
}
