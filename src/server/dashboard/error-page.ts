import { html } from 'hono/html';
import { type Html, layout } from './layout.ts';
import type { Session } from './session-store.ts';

/** An error page: what went wrong and a way back. */
export function errorPage(options: { session?: Session | undefined; title: string; message: string }): Html {
  return layout({
    title: options.title,
    session: options.session,
    body: html`<h1>${options.title}</h1><p class="error">${options.message}</p><p><a href="/">Back to the fleet</a></p>`,
  });
}
