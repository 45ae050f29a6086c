import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { sql } from 'kysely';
import type { Browser, Page } from 'playwright-core';
import { launchChromium } from '../helpers/chromium.ts';
import { cli, startTestServer, type TestServer } from '../helpers/server.ts';

/** docs/dashboard.md: "Sessions last 12 hours". */
const TWELVE_HOURS_MS = 12 * 60 * 60 * 1000;

/**
 * How dashboard sessions end (docs/dashboard.md): after 12 hours, and at once when the token
 * they were opened with is revoked or expires. Each case signs in with a token of its own in a
 * fresh browser context, so that they do not end each other's sessions.
 *
 * The server takes its clock from Date.now and offers no setting for the session lifetime, so
 * the passing of 12 hours is played by moving the session's times back in the database, as if
 * it had been opened that long ago.
 */
describe('dashboard sessions in Chromium: expiry and revocation', () => {
  let server: TestServer;
  let browser: Browser;
  const env = () => ({ CAIRN_SERVER: server.url, CAIRN_TOKEN: server.adminToken });

  before(async () => {
    server = await startTestServer();
    browser = await launchChromium();
  });
  after(async () => {
    await browser?.close();
    await server?.stop();
  });

  /** Creates a token that may view the dashboard, named `name`; `extra` adds flags such as --expires. */
  const createToken = async (name: string, extra: string[] = []) => {
    const r = await cli(['token', 'create', '--scope', 'activate', '--name', name, ...extra], env());
    assert.equal(r.code, 0, r.stderr);
    return r.stdout.trim();
  };

  /** Signs in with `token` in a new browser context and checks the fleet page opens. */
  const signIn = async (token: string): Promise<Page> => {
    const context = await browser.newContext();
    const page = await context.newPage();
    await page.goto(`${server.url}/`);
    assert.match(page.url(), /\/login\?next=/);
    await page.fill('#token', token);
    await page.click('button[type=submit]');
    await page.waitForSelector('h1:text("Fleet")');
    return page;
  };

  /** Where the page ends after opening `path` again. */
  const reopen = async (page: Page, path: string) => {
    await page.goto(`${server.url}${path}`);
    return new URL(page.url());
  };

  /**
   * A form POST with the page's session cookie and a wrong CSRF token: a live session is
   * refused with 403 (the CSRF check), a dead one is sent to sign in (303 to /login).
   */
  const postWithSession = async (page: Page) => {
    const cookie = (await page.context().cookies()).find((c) => c.name === 'cairn_session');
    assert.ok(cookie, 'the browser holds no session cookie');
    const res = await fetch(`${server.url}/agents/nobody/rollback`, {
      method: 'POST',
      headers: {
        Cookie: `cairn_session=${cookie.value}`,
        'Content-Type': 'application/x-www-form-urlencoded',
      },
      body: '_csrf=irrelevant',
      redirect: 'manual',
    });
    return { status: res.status, location: res.headers.get('location') };
  };

  /** Moves the sessions opened with token `name` back in time by `ms`, as if opened that much earlier. */
  const ageSessions = async (name: string, ms: number) => {
    await server.query(
      sql`update dashboard_sessions set created_at = created_at - ${ms}, expires_at = expires_at - ${ms}
          where token_id in (select id from tokens where name = ${name})`,
    );
  };

  it('opens a session for 12 hours, kept on the server and in the cookie', async () => {
    const page = await signIn(await createToken('twelve'));
    const rows = await server.query<{ ttl: number | string }>(
      sql`select s.expires_at - s.created_at as ttl from dashboard_sessions s
          join tokens t on t.id = s.token_id where t.name = ${'twelve'}`,
    );
    assert.deepEqual(
      rows.map((r) => Number(r.ttl)),
      [TWELVE_HOURS_MS],
    );
    const cookie = (await page.context().cookies()).find((c) => c.name === 'cairn_session')!;
    const cookieTtlMs = cookie.expires * 1000 - Date.now();
    assert.ok(Math.abs(cookieTtlMs - TWELVE_HOURS_MS) < 60_000, `cookie lives ${cookieTtlMs} ms`);
  });

  it('keeps a session a minute before its 12 hours end, and sends it to sign in once they have', async () => {
    const page = await signIn(await createToken('expiring-session'));
    await ageSessions('expiring-session', TWELVE_HOURS_MS - 60_000);
    const still = await reopen(page, '/');
    assert.equal(still.pathname, '/', 'a session of 11 h 59 min was refused');
    assert.equal((await postWithSession(page)).status, 403);
    await ageSessions('expiring-session', 61_000);
    const after = await reopen(page, '/?q=x');
    assert.equal(after.pathname, '/login');
    assert.equal(after.searchParams.get('next'), '/?q=x');
    assert.equal(await page.locator('#token').count(), 1);
    assert.deepEqual(await postWithSession(page), { status: 303, location: '/login' });
  });

  it("ends a session at once when its token is revoked, and refuses the session's forms", async () => {
    const page = await signIn(await createToken('revoked-viewer'));
    // Another session, of another token, stays open: only the revoked token's sessions end.
    const other = await signIn(await createToken('other-viewer'));
    const revoked = await cli(['token', 'revoke', 'revoked-viewer'], env());
    assert.equal(revoked.code, 0, revoked.stderr);
    const after = await reopen(page, '/');
    assert.equal(after.pathname, '/login');
    assert.equal(after.searchParams.get('next'), '/');
    assert.deepEqual(await postWithSession(page), { status: 303, location: '/login' });
    assert.equal((await reopen(other, '/')).pathname, '/');
  });

  it('ends a session when its token expires', async () => {
    // --expires takes a date; a few seconds ahead, so the token expires during the test.
    const expires = new Date(Date.now() + 4000).toISOString();
    const page = await signIn(await createToken('short-lived', ['--expires', expires]));
    assert.equal((await reopen(page, '/')).pathname, '/');
    await new Promise((r) => setTimeout(r, Date.parse(expires) - Date.now() + 500));
    const after = await reopen(page, '/');
    assert.equal(after.pathname, '/login');
  });
});
