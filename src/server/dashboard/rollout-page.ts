import { html } from 'hono/html';
import type { StagedRollout } from '../../protocol/api-schemas.ts';
import type { DeploymentRow } from '../db/deployment-repository.ts';
import type { DashboardRollout } from './dashboard-queries.ts';
import { deploymentsTable } from './deployments-table.ts';
import { iso } from './format.ts';
import { type Html, layout } from './layout.ts';
import { allowedButtons, rolloutControls } from './rollout-controls.ts';
import type { Session } from './session-store.ts';
import { stagedRolloutView } from './staged-rollout-view.ts';

/**
 * One rollout (one `deploy activate`): every agent's deployment and its state. A staged rollout
 * also shows its batches, threshold and why it waits, with the buttons that steer it (to a
 * principal that may deploy to every agent of it), and follows changes over Server-Sent Events
 * (`live`); one that deployed at once refreshes its table every few seconds.
 */
export function rolloutPage(options: {
  session: Session;
  rollout: DashboardRollout;
  deployments: readonly DeploymentRow[];
  now: number;
  staged?: StagedRollout | null;
  /** May the principal pause, resume, promote and abort it? */
  canOperate?: boolean;
  /** Follow it live (a staged rollout not over yet). */
  live?: boolean;
  /** Why the last operation was refused. */
  error?: string | undefined;
  /** Offer to plan the next batch on its machines (a staged rollout with a batch not opened). */
  canPlan?: boolean;
}): Html {
  const { rollout: r, deployments, staged } = options;
  const counts = new Map<string, number>();
  for (const d of deployments) counts.set(d.state, (counts.get(d.state) ?? 0) + 1);
  const summary = html`<p>${[...counts].map(([s, n]) => `${n} ${s}`).join(', ') || 'no deployments'}</p>`;
  const links = [
    r.reverts_rollout_id === null
      ? ''
      : html`<p>Reverts <a href="/rollouts/${r.reverts_rollout_id}">rollout #${r.reverts_rollout_id}</a>.</p>`,
    r.reverted_by === null
      ? ''
      : html`<p>Reverted by <a href="/rollouts/${r.reverted_by}">rollout #${r.reverted_by}</a>${r.revert_state === 'pending' ? ' (in progress)' : ''}.</p>`,
  ];
  const body = staged
    ? html`<div id="rollout"${options.live ? html` data-events="/rollouts/${r.id}/events" data-src="/rollouts/${r.id}"` : ''}>
${links}
${stagedRolloutView({
  staged,
  deployments,
  controls: options.canOperate
    ? rolloutControls({
        id: r.id,
        csrf: options.session.csrf,
        buttons: allowedButtons(staged, r.promoted_to, r.id),
      })
    : html``,
})}
<p class="muted">Deployments: ${[...counts].map(([s, n]) => `${n} ${s}`).join(', ')}</p>
${options.live ? html`<noscript><p class="muted">Reload the page to see changes.</p></noscript>` : ''}
</div>`
    : html`<div id="rollout" data-refresh="3">
${summary}
${deploymentsTable(deployments, { now: options.now, showAgent: true })}
</div>`;
  return layout({
    title: `Rollout #${r.id}`,
    session: options.session,
    body: html`<h1>Rollout #${r.id}</h1>
<p class="muted">Created <time datetime="${iso(r.created_at)}">${iso(r.created_at).replace('T', ' ').slice(0, 19)} UTC</time> by ${r.created_by}.</p>
${staged ? '' : links}
${options.error ? html`<p class="callout bad" role="alert" id="rollout-error">${options.error}</p>` : ''}
${body}
${
  options.canPlan
    ? html`<form method="post" action="/rollouts/${r.id}/plan" id="plan-form" class="plan-form">
<input type="hidden" name="_csrf" value="${options.session.csrf}">
<button type="submit" title="Ask the machines of the next batch what it would download and change; nothing changes on them">Plan the next batch on its machines</button>
<label><input type="checkbox" name="dryActivate" value="true"> with dry-activate (NixOS machines fetch the closure first; up to 4 minutes)</label>
</form>`
    : ''
}`,
  });
}
