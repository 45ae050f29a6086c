import { randomBytes, timingSafeEqual } from 'node:crypto';
import type { Context, Hono } from 'hono';
import { deleteCookie, getCookie, setCookie } from 'hono/cookie';
import { CairnError, isCairnError } from '../../lib/cairn-error.ts';
import type { Authenticator } from '../auth/authenticator.ts';
import { canViewFleet } from '../auth/permissions.ts';
import type { Principal } from '../auth/principal.ts';
import { clientAddress } from '../http/client-address.ts';
import { loginPage } from './login-page.ts';
import { sendPage } from './send-page.ts';
import { SESSION_TTL_MS, type Session, type SessionStore } from './session-store.ts';

const SESSION_COOKIE = 'cairn_session';
const LOGIN_COOKIE = 'cairn_login';

/** True when the browser reached us over TLS, directly or through a proxy that says so. */
const overTls = (c: Context) =>
  new URL(c.req.url).protocol === 'https:' || c.req.header('x-forwarded-proto')?.split(',')[0] === 'https';

const same = (a: string, b: string) =>
  a.length === b.length && a.length > 0 && timingSafeEqual(Buffer.from(a), Buffer.from(b));

/** Only a path on this site, never `//evil.example` nor a scheme. */
const safeNext = (next: unknown) =>
  typeof next === 'string' && /^\/(?![/\\])[^\s]*$/.test(next) && next.length < 2000 ? next : '/';

const cookieOptions = (c: Context, maxAgeSeconds: number) => ({
  httpOnly: true,
  sameSite: 'Strict' as const,
  secure: overTls(c),
  path: '/',
  maxAge: maxAgeSeconds,
});

/** The session of the browser that sent the request, if it is signed in. */
export function sessionOf(sessions: SessionStore, c: Context): Promise<Session | undefined> {
  return sessions.lookup(getCookie(c, SESSION_COOKIE));
}

/** Reads a form posted by a signed-in browser, after checking its CSRF token. */
export async function checkedForm(c: Context, s: Session): Promise<Record<string, unknown>> {
  const form = await c.req.parseBody();
  if (!same(String(form._csrf ?? ''), s.csrf)) {
    throw new CairnError(
      'FORBIDDEN',
      'Cannot accept the form: its CSRF token is missing or stale; reload the page',
    );
  }
  return form;
}

/**
 * `/login` and `/logout`: a token exchanged for a session cookie (HttpOnly, SameSite=Strict,
 * Secure over TLS), the sign-in form protected by a double-submitted cookie.
 */
export function registerSignInRoutes(app: Hono, deps: { auth: Authenticator; sessions: SessionStore }): void {
  const showLogin = (c: Context, next: string, error?: string, status = 200) => {
    const nonce = randomBytes(18).toString('base64url');
    setCookie(c, LOGIN_COOKIE, nonce, cookieOptions(c, 3600));
    return sendPage(c, loginPage({ nonce, next, error }), { status });
  };

  app.get('/login', (c) => showLogin(c, safeNext(c.req.query('next'))));

  app.post('/login', async (c) => {
    const form = await c.req.parseBody();
    const next = safeNext(form.next);
    // Login CSRF: the form must come from our own page (double-submit of the login cookie).
    if (!same(String(form._csrf ?? ''), getCookie(c, LOGIN_COOKIE) ?? '')) {
      return showLogin(c, next, 'The form expired; please sign in again.', 403);
    }
    const token = String(form.token ?? '').trim();
    let principal: Principal | undefined;
    try {
      // Counted per client address (behind --trusted-proxy, the one it forwarded), never in one
      // bucket for everyone: else anyone could keep every user from signing in.
      principal = await deps.auth.authenticate(`Bearer ${token}`, clientAddress(c), { purpose: 'sign-in' });
    } catch (err) {
      if (!isCairnError(err)) throw err;
      if (err.code === 'TOO_MANY_REQUESTS') {
        const retry = err.headers?.['Retry-After'];
        if (retry) c.header('Retry-After', retry);
        return showLogin(c, next, err.message, 429);
      }
      return showLogin(c, next, err.message, 401);
    }
    if (!principal || !canViewFleet(principal)) {
      return showLogin(
        c,
        next,
        `Cannot sign in: token '${principal?.tokenName ?? ''}' lacks the admin or activate scope`,
        403,
      );
    }
    const secret = await deps.sessions.create(principal.tokenId);
    deleteCookie(c, LOGIN_COOKIE, { path: '/' });
    setCookie(c, SESSION_COOKIE, secret, cookieOptions(c, SESSION_TTL_MS / 1000));
    return c.redirect(next, 303);
  });

  app.post('/logout', async (c) => {
    const s = await sessionOf(deps.sessions, c);
    if (s) {
      await checkedForm(c, s);
      await deps.sessions.delete(getCookie(c, SESSION_COOKIE)!);
    }
    deleteCookie(c, SESSION_COOKIE, { path: '/' });
    return c.redirect('/login', 303);
  });
}
