import { html } from 'hono/html';
import type { DeploymentRow } from '../db/deployment-repository.ts';
import { deploymentsTable } from './deployments-table.ts';
import { iso } from './format.ts';
import { type Html, layout } from './layout.ts';
import type { Session } from './session-store.ts';

/** One rollout (one `deploy activate`): every agent's deployment and its state. */
export function rolloutPage(options: {
  session: Session;
  rollout: { id: number; created_at: number; created_by: string };
  deployments: readonly DeploymentRow[];
  now: number;
}): Html {
  const { rollout: r, deployments } = options;
  const counts = new Map<string, number>();
  for (const d of deployments) counts.set(d.state, (counts.get(d.state) ?? 0) + 1);
  return layout({
    title: `Rollout #${r.id}`,
    session: options.session,
    body: html`<h1>Rollout #${r.id}</h1>
<p class="muted">Created <time datetime="${iso(r.created_at)}">${iso(r.created_at).replace('T', ' ').slice(0, 19)} UTC</time> by ${r.created_by}.</p>
<div id="rollout" data-refresh="3">
<p>${[...counts].map(([s, n]) => `${n} ${s}`).join(', ') || 'no deployments'}</p>
${deploymentsTable(deployments, { now: options.now, showAgent: true })}
</div>`,
  });
}
