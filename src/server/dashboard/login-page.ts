import { html } from 'hono/html';
import { type Html, layout } from './layout.ts';

/** The sign-in form: a token, pasted once; the browser then holds a session cookie only. */
export function loginPage(options: { nonce: string; next: string; error?: string | undefined }): Html {
  return layout({
    title: 'Sign in',
    body: html`<section class="login">
<h1>Sign in to Cairn</h1>
<p class="muted">Paste a token with the <code>admin</code> or <code>activate</code> scope
(<code>cairn token create</code>). It is checked, never stored in the browser: you get a session.</p>
${options.error ? html`<p class="error" role="alert">${options.error}</p>` : ''}
<form method="post" action="/login">
  <input type="hidden" name="_csrf" value="${options.nonce}">
  <input type="hidden" name="next" value="${options.next}">
  <label for="token">Token</label>
  <input id="token" name="token" type="password" autocomplete="current-password" required placeholder="cairn_…">
  <button type="submit">Sign in</button>
</form>
</section>`,
  });
}
