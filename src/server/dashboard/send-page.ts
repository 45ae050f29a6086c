import type { Context } from 'hono';
import type { Html } from './layout.ts';

/**
 * The strictest policy the pages work with: scripts and styles from this origin only (no inline
 * ones), no frames, forms posting only here.
 */
const CSP = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' data:",
  "connect-src 'self'",
  "form-action 'self'",
  "frame-ancestors 'none'",
  "base-uri 'none'",
].join('; ');

/**
 * Sets the dashboard's security headers. Only on the dashboard's own responses: a '*'
 * middleware would run for the whole app.
 */
export function secureHeaders(c: Context): void {
  c.header('Content-Security-Policy', CSP);
  c.header('X-Content-Type-Options', 'nosniff');
  c.header('Referrer-Policy', 'same-origin');
  c.header('X-Frame-Options', 'DENY');
}

/** Answers with a rendered page: security headers, never cached, with the time it took to render. */
export async function sendPage(
  c: Context,
  page: Html,
  options: { status?: number; started?: number } = {},
): Promise<Response> {
  const started = options.started ?? performance.now();
  const body = await page;
  secureHeaders(c);
  c.header('Cache-Control', 'no-store');
  // Server time, for bench/dashboard.ts and the browser's dev tools.
  c.header('Server-Timing', `app;dur=${(performance.now() - started).toFixed(1)}`);
  return c.html(body, (options.status ?? 200) as 200);
}
