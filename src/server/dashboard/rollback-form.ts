import { html } from 'hono/html';
import type { Html } from './layout.ts';

/**
 * The rollback button: a POST form carrying the session's CSRF token, which works without
 * JavaScript; with it, the browser asks first.
 */
export function rollbackForm(options: { agent: string; csrf: string; to?: number; label?: string }): Html {
  return html`<form method="post" action="/agents/${options.agent}/rollback" data-confirm="Roll ${options.agent} back${options.to ? ` to deployment #${options.to}` : ' to what it ran before'}?">
<input type="hidden" name="_csrf" value="${options.csrf}">
${options.to ? html`<input type="hidden" name="to" value="${options.to}">` : ''}
<button type="submit" class="danger">${options.label ?? 'Roll back'}</button>
</form>`;
}
