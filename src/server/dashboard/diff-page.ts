import { html } from 'hono/html';
import type { DeploymentDiff } from '../../protocol/api-schemas.ts';
import { diffSources, diffView } from './diff-view.ts';
import { type Html, layout } from './layout.ts';
import type { Session } from './session-store.ts';

/** The diff between two deployments, full page. */
export function diffPage(options: { session: Session; diff: DeploymentDiff }): Html {
  const { diff } = options;
  const side = (s: DeploymentDiff['from']) =>
    s.deploymentId === null
      ? html`nothing`
      : html`<a href="/deployments/${s.deploymentId}">#${s.deploymentId}</a> (${s.agent}) <span class="mono">${s.storePath}</span>`;
  return layout({
    title: 'Diff',
    session: options.session,
    body: html`<h1>Closure diff</h1>
<dl class="facts"><dt>Before</dt><dd>${side(diff.from)}</dd><dt>After</dt><dd>${side(diff.to)}</dd></dl>
${diffSources(diff)}
${diffView(diff.diff)}`,
  });
}
