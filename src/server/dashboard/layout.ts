import { html } from 'hono/html';
import type { HtmlEscapedString } from 'hono/utils/html';
import { isAdmin } from '../auth/permissions.ts';
import type { Session } from './session-store.ts';

/** What a template returns: escaped HTML, possibly still resolving. */
export type Html = HtmlEscapedString | Promise<HtmlEscapedString>;

/**
 * The page shell: header with navigation and sign-out, the page's content in `<main>`. No
 * inline script or style (the CSP forbids them): behaviour comes from /static/app.js, which
 * only enhances what already works without it.
 */
export function layout(options: { title: string; session?: Session | undefined; body: Html }): Html {
  const { title, session, body } = options;
  return html`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${title} · Cairn</title>
<link rel="stylesheet" href="/static/app.css">
<script src="/static/app.js" defer></script>
</head>
<body>
<header class="top">
  <a class="brand" href="/">Cairn</a>
  ${
    session
      ? html`<nav><a href="/">Fleet</a>${isAdmin(session.principal) ? html` <a href="/caches">Caches</a> <a href="/webhooks">Webhooks</a>` : ''}</nav>
  <form method="post" action="/logout" class="signout">
    <input type="hidden" name="_csrf" value="${session.csrf}">
    <span class="who">${session.principal.tokenName}</span>
    <button type="submit">Sign out</button>
  </form>`
      : ''
  }
</header>
<main id="main">
${body}
</main>
</body>
</html>`;
}

/** A coloured badge for a deployment state or online status. */
/** The mark of an enrolled agent waiting for an admin's approval (it receives no deployment). */
export function approvalBadge(pendingSince: number | null): Html | string {
  return pendingSince === null
    ? ''
    : html` <span class="badge s-pending" title="run: cairn agent approve NAME">pending approval</span>`;
}

export function badge(state: string, id?: string): Html {
  return html`<span class="badge s-${state}"${id ? html` id="${id}"` : ''}>${state}</span>`;
}
