import { html } from 'hono/html';
import type { StagedRollout } from '../../protocol/api-schemas.ts';
import type { Html } from './layout.ts';

/** The operations a form on the rollout page may ask for, as its path says them. */
export const ROLLOUT_FORM_OPS = ['pause', 'resume', 'promote', 'abort'] as const;

interface Button {
  readonly op: (typeof ROLLOUT_FORM_OPS)[number];
  readonly label: string;
  readonly help: string;
  readonly field?: 'full' | 'revert';
  readonly danger?: boolean;
  readonly confirm?: string;
}

/**
 * The buttons the rollout's state allows, as the engine's rules say (`operate-rollout.ts`):
 * pause while running, resume while paused, promote while a later batch is left, abort until over.
 */
export function allowedButtons(
  staged: Pick<StagedRollout, 'state' | 'batch' | 'batches'>,
  promotedTo: number,
  id: number,
): Button[] {
  const last = staged.batches.length - 1;
  const active = staged.state === 'running' || staged.state === 'pending';
  const buttons: Button[] = [];
  if (active) buttons.push({ op: 'pause', label: 'Pause', help: 'Stop dispatching and stop the deadlines' });
  if (staged.state === 'paused') {
    buttons.push({ op: 'resume', label: 'Resume', help: 'Go on; the failures so far are accepted' });
  }
  if (active && staged.batch < last && promotedTo < last) {
    buttons.push({ op: 'promote', label: 'Promote', help: 'Open the next batch now' });
    if (Math.max(staged.batch, promotedTo) + 1 < last) {
      buttons.push({ op: 'promote', field: 'full', label: 'Promote all', help: 'Open every batch now' });
    }
  }
  if (active || staged.state === 'paused') {
    buttons.push({
      op: 'abort',
      label: 'Abort',
      help: 'Stop the rollout; agents not yet dispatched are cancelled',
      danger: true,
      confirm: `Abort rollout #${id}? Agents not yet dispatched are cancelled.`,
    });
    buttons.push({
      op: 'abort',
      field: 'revert',
      label: 'Abort and revert',
      help: 'Stop the rollout and roll back every agent it switched',
      danger: true,
      confirm: `Abort rollout #${id} and roll back every agent it switched?`,
    });
  }
  return buttons;
}

/**
 * The rollout's pause, resume, promote and abort buttons: POST forms carrying the session's CSRF
 * token, which work without JavaScript; with it, the browser asks before an abort.
 */
export function rolloutControls(options: { id: number; csrf: string; buttons: readonly Button[] }): Html {
  const { id, csrf, buttons } = options;
  if (buttons.length === 0) return html``;
  return html`<div class="actions" role="group" aria-label="Steer rollout #${id}">
${buttons.map(
  (
    b,
  ) => html`<form method="post" action="/rollouts/${id}/${b.op}"${b.confirm ? html` data-confirm="${b.confirm}"` : ''}>
<input type="hidden" name="_csrf" value="${csrf}">
${b.field ? html`<input type="hidden" name="${b.field}" value="true">` : ''}
<button type="submit"${b.danger ? html` class="danger"` : ''} title="${b.help}">${b.label}</button>
</form>`,
)}
</div>`;
}
