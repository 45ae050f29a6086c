import assert from 'node:assert/strict';

/** A browser's sign-in to the dashboard, over plain HTTP: its session cookie and CSRF token. */
export interface DashboardSession {
  /** The `Cookie` header value to send. */
  readonly cookie: string;
  /** The CSRF token the dashboard's forms carry. */
  readonly csrf: string;
}

const cookieOf = (res: Response, name: string) => {
  const line = res.headers.getSetCookie().find((c) => c.startsWith(`${name}=`));
  assert.ok(line, `no ${name} cookie in ${res.status} ${res.url}`);
  return line.split(';')[0]!;
};

/** The value of the hidden `_csrf` input of a page's form. */
export function csrfOf(page: string): string {
  const m = /name="_csrf" value="([^"]+)"/.exec(page);
  assert.ok(m, 'no CSRF token on the page');
  return m[1]!;
}

/**
 * Signs in to the dashboard as a browser does: reads the sign-in form (its nonce cookie and
 * hidden field), posts the token, then reads a page for the session's CSRF token.
 */
export async function signInToDashboard(baseUrl: string, token: string): Promise<DashboardSession> {
  const form = await fetch(`${baseUrl}/login`);
  assert.equal(form.status, 200);
  const nonceCookie = cookieOf(form, 'cairn_login');
  const nonce = csrfOf(await form.text());
  const signIn = await fetch(`${baseUrl}/login`, {
    method: 'POST',
    redirect: 'manual',
    headers: { 'Content-Type': 'application/x-www-form-urlencoded', Cookie: nonceCookie },
    body: new URLSearchParams({ _csrf: nonce, token, next: '/' }).toString(),
  });
  assert.equal(signIn.status, 303, await signIn.text());
  const cookie = cookieOf(signIn, 'cairn_session');
  const home = await fetch(`${baseUrl}/`, { headers: { Cookie: cookie } });
  assert.equal(home.status, 200);
  return { cookie, csrf: csrfOf(await home.text()) };
}
