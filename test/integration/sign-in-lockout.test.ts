import assert from 'node:assert/strict';
import { request } from 'node:http';
import { after, before, describe, it } from 'node:test';
import { startTestServer, type TestServer } from '../helpers/server.ts';

/** A token of the right shape that no server issued. */
const BAD_TOKEN = `cairn_${'B'.repeat(43)}`;

interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

/** One HTTP request from the loopback address `from`, so that clients have addresses of their own. */
function send(
  url: string,
  o: { from: string; method?: string; headers?: Record<string, string>; body?: string },
): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = request(url, {
      method: o.method ?? 'GET',
      localAddress: o.from,
      headers: o.headers,
      agent: false,
    });
    req.on('response', (res) => {
      let body = '';
      res.on('data', (d) => {
        body += d;
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
    });
    req.on('error', reject);
    req.end(o.body);
  });
}

/** A browser at `from` signing in with `token`, optionally naming `forwardedFor` as a proxy would. */
async function signIn(
  server: TestServer,
  o: { from: string; token: string; forwardedFor?: string; form?: { cookie: string; nonce: string } },
): Promise<Answer> {
  const xff: Record<string, string> = o.forwardedFor ? { 'X-Forwarded-For': o.forwardedFor } : {};
  const form = o.form ?? (await formOf(server, o.from, o.forwardedFor));
  return await send(`${server.url}/login`, {
    from: o.from,
    method: 'POST',
    headers: { ...xff, Cookie: form.cookie, 'Content-Type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ _csrf: form.nonce, token: o.token, next: '/' }).toString(),
  });
}

/** The attacker's sign-in form, fetched once and posted over and over. */
async function formOf(server: TestServer, from: string, forwardedFor?: string) {
  const page = await send(`${server.url}/login`, {
    from,
    headers: forwardedFor ? { 'X-Forwarded-For': forwardedFor } : {},
  });
  const cookie = String(page.headers['set-cookie']).split(';')[0]!;
  return { cookie, nonce: cookie.split('=')[1]! };
}

/**
 * Issue #23, finding 3: failed sign-ins were counted in one bucket shared by everyone, so about
 * 32 bad attempts locked every user out of the dashboard. They are now counted per client
 * address (the forwarded one behind a trusted proxy), apart from API requests.
 */
describe('failed sign-ins are counted per client address', () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer();
  });
  after(async () => {
    await server.stop();
  });

  it('lets another address sign in after 1,000 bad sign-ins from one, and slows down only that one', async () => {
    const form = await formOf(server, '127.0.0.2');
    const statuses = new Map<number, number>();
    for (let i = 0; i < 1000; i++) {
      const r = await signIn(server, { from: '127.0.0.2', token: BAD_TOKEN, form });
      statuses.set(r.status, (statuses.get(r.status) ?? 0) + 1);
    }
    // The attacker is refused, and told when to retry.
    assert.ok((statuses.get(429) ?? 0) > 900, JSON.stringify([...statuses]));
    const refused = await signIn(server, { from: '127.0.0.2', token: server.adminToken, form });
    assert.equal(refused.status, 429);
    assert.ok(Number(refused.headers['retry-after']) >= 1, JSON.stringify(refused.headers));
    assert.match(refused.body, /too many failed attempts from 127\.0\.0\.2/);

    const victim = await signIn(server, { from: '127.0.0.3', token: server.adminToken });
    assert.equal(victim.status, 303, victim.body);
    assert.match(String(victim.headers['set-cookie']), /cairn_session=/);
  });

  it('never refuses an API token because of failed sign-ins from its address', async () => {
    const form = await formOf(server, '127.0.0.4');
    for (let i = 0; i < 100; i++) await signIn(server, { from: '127.0.0.4', token: BAD_TOKEN, form });
    assert.equal((await signIn(server, { from: '127.0.0.4', token: BAD_TOKEN, form })).status, 429);
    const api = await send(`${server.url}/api/v1/workspaces/default/caches`, {
      from: '127.0.0.4',
      headers: { Authorization: `Bearer ${server.adminToken}` },
    });
    assert.equal(api.status, 200, api.body);
  });
});

describe('failed sign-ins behind a trusted proxy', () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer({ env: { CAIRN_TRUSTED_PROXY: '127.0.0.1' } });
  });
  after(async () => {
    await server.stop();
  });

  it('counts them per forwarded address, so one client behind the proxy does not lock out another', async () => {
    const form = await formOf(server, '127.0.0.1', '203.0.113.5');
    for (let i = 0; i < 100; i++) {
      await signIn(server, { from: '127.0.0.1', forwardedFor: '203.0.113.5', token: BAD_TOKEN, form });
    }
    const attacker = await signIn(server, {
      from: '127.0.0.1',
      forwardedFor: '203.0.113.5',
      token: server.adminToken,
      form,
    });
    assert.equal(attacker.status, 429);
    assert.match(attacker.body, /from 203\.0\.113\.5/);
    const victim = await signIn(server, {
      from: '127.0.0.1',
      forwardedFor: '203.0.113.6',
      token: server.adminToken,
    });
    assert.equal(victim.status, 303, victim.body);
  });
});
