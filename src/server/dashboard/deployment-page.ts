import { html } from 'hono/html';
import type { DeploymentDiff } from '../../protocol/api-schemas.ts';
import type { DeploymentRow } from '../db/deployment-repository.ts';
import { diffSources, diffView } from './diff-view.ts';
import { duration, formatBytes, iso } from './format.ts';
import { badge, type Html, layout } from './layout.ts';
import { rollbackForm } from './rollback-form.ts';
import type { Session } from './session-store.ts';

const OPEN = new Set(['pending', 'running']);
const at = (t: number | null) =>
  t === null ? '' : html`<time datetime="${iso(t)}">${iso(t).replace('T', ' ').slice(0, 19)} UTC</time>`;

/**
 * One deployment: its state timeline, its log (followed live while it runs), the diff against
 * what the agent ran before, and the rollback button.
 */
export function deploymentPage(options: {
  session: Session;
  deployment: DeploymentRow;
  lines: ReadonlyArray<{ seq: number; t: number; text: string }>;
  previous: DeploymentRow | undefined;
  diff: DeploymentDiff | undefined;
  canRollback: boolean;
}): Html {
  const { deployment: d, lines } = options;
  const open = OPEN.has(d.state);
  const lastSeq = lines.at(-1)?.seq ?? 0;
  const finalClass = d.state === 'succeeded' ? 'done' : 'bad';
  return layout({
    title: `Deployment #${d.id}`,
    session: options.session,
    body: html`<h1>Deployment #${d.id} ${badge(d.state, 'state')}</h1>
<dl class="facts">
<dt>Agent</dt><dd><a href="/agents/${d.agent_name}">${d.agent_name}</a></dd>
<dt>Rollout</dt><dd><a href="/rollouts/${d.rollout_id}">#${d.rollout_id}</a> <span class="muted">(${d.kind})</span></dd>
<dt>Store path</dt><dd class="mono">${d.store_path}</dd>
<dt>Step</dt><dd id="step">${d.step ?? '–'}</dd>
<dt>Closure size</dt><dd>${formatBytes(d.closure_nar_size)}</dd>
<dt>Duration</dt><dd>${duration(d.started_at, d.finished_at)}</dd>
${d.reason ? html`<dt>Reason</dt><dd class="error">${d.reason}</dd>` : ''}
${d.reboot_required === 1 ? html`<dt>Reboot</dt><dd>required: the new kernel is not running yet</dd>` : ''}
</dl>
<h2>Timeline</h2>
<ol class="timeline">
<li class="done">Created ${at(d.created_at)}</li>
${d.started_at !== null ? html`<li class="done">Started ${at(d.started_at)}</li>` : html`<li>Waiting for the agent</li>`}
${open && d.step ? html`<li>Now: ${d.step}</li>` : ''}
${d.finished_at !== null ? html`<li class="${finalClass}">${d.state}${d.step && d.state !== 'succeeded' ? html` at ${d.step}` : ''} ${at(d.finished_at)}</li>` : ''}
</ol>
${options.canRollback ? html`<div class="actions">${rollbackForm({ agent: d.agent_name, csrf: options.session.csrf, label: `Roll ${d.agent_name} back` })}</div>` : ''}
<h2>Log <span id="live" class="badge s-running" hidden>live</span></h2>
${d.logs_expired_at !== null ? html`<p class="muted">The log was deleted by log retention ${at(d.logs_expired_at)}.</p>` : ''}
<pre class="log" id="log"${open ? html` data-events="/deployments/${d.id}/events" data-after="${lastSeq}"` : ''}>${lines.map(
      (l) => html`<span class="line" data-seq="${l.seq}">${l.text}
</span>`,
    )}</pre>
${lines.length === 0 ? html`<p class="muted" id="log-empty">No log lines${open ? ' yet' : ''}.</p>` : ''}
${open ? html`<noscript><p class="muted">Reload the page to see new lines.</p></noscript>` : ''}
<h2>Changes</h2>
${
  options.diff
    ? html`<p>Against ${options.previous ? html`<a href="/deployments/${options.previous.id}">#${options.previous.id}</a>, what ${d.agent_name} ran before` : 'nothing: the first deployment'}
 · <a href="/diff?from=${options.previous?.id ?? ''}&amp;to=${d.id}">full diff</a></p>
${diffSources(options.diff)}
${diffView(options.diff.diff)}`
    : html`<p class="muted">No earlier deployment to compare with.</p>`
}`,
  });
}
