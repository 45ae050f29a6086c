import assert from 'node:assert/strict';
import { request } from 'node:http';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { plainPackage } from '../helpers/deploy-fixtures.ts';
import { buildPackages, RUN_TAG } from '../helpers/nix.ts';
import { cli, startTestServer, type TestServer } from '../helpers/server.ts';

/**
 * The server remembers valid tokens for a few seconds so that a narinfo request needs no
 * query. Remembering must never let a revoked, expired or unknown token through.
 */
describe('remembered tokens on the binary cache', () => {
  let server: TestServer;
  let env: Record<string, string>;
  let narinfo = '';
  const admin = async (args: string[]) => {
    const r = await cli(args, env);
    assert.equal(r.code, 0, r.stderr);
    return r.stdout.trim();
  };
  const api = (path: string, init: { method: string; body?: unknown }) =>
    fetch(`${server.url}/api/v1/workspaces/default/${path}`, {
      method: init.method,
      headers: { Authorization: `Bearer ${server.adminToken}`, 'Content-Type': 'application/json' },
      ...(init.body === undefined ? {} : { body: JSON.stringify(init.body) }),
    });
  /** GETs the private narinfo as Nix does with a netrc entry, from `address`; resolves to the status. */
  const pull = (token: string, address: string) =>
    new Promise<number>((resolve, reject) => {
      const req = request(`${server.url}${narinfo}`, {
        localAddress: address,
        agent: false,
        headers: { Authorization: `Basic ${Buffer.from(`cairn:${token}`).toString('base64')}` },
      });
      req.on('response', (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      });
      req.on('error', reject);
      req.end();
    });

  before(async () => {
    // Few failures allowed per address, so that a test can see each failure counted.
    server = await startTestServer({ failedAuthBurst: 3 });
    env = { CAIRN_SERVER: server.url, CAIRN_TOKEN: server.adminToken };
    await admin(['cache', 'create', 'private']);
    const paths = await buildPackages([plainPackage(`remembered-${RUN_TAG}`)]);
    const storePath = paths.get(`remembered-${RUN_TAG}`)!;
    await admin(['push', 'private', storePath]);
    narinfo = `/cache/private/${storePath.slice(11, 43)}.narinfo`;
  });
  after(() => server.stop());

  it('refuses a token revoked with `cairn token revoke` on the very next request, though it was just used', async () => {
    const token = await admin(['token', 'create', '--scope', 'cache:private:pull', '--name', 'cli-revoked']);
    assert.equal(await pull(token, '127.0.0.11'), 200);
    assert.equal(await pull(token, '127.0.0.11'), 200, 'served again, now from memory');
    await admin(['token', 'revoke', 'cli-revoked']);
    assert.equal(await pull(token, '127.0.0.11'), 401);
  });

  it('refuses a token revoked through the API by id on the very next request', async () => {
    const created = await api('tokens', {
      method: 'POST',
      body: { name: 'api-revoked', scopes: ['cache:private:pull'] },
    });
    assert.equal(created.status, 201);
    const { id, token } = (await created.json()) as { id: string; token: string };
    assert.equal(await pull(token, '127.0.0.12'), 200);
    assert.equal(await pull(token, '127.0.0.12'), 200);
    assert.equal((await api(`tokens/${id}`, { method: 'DELETE' })).status, 204);
    assert.equal(await pull(token, '127.0.0.12'), 401);
  });

  it('refuses an agent token revoked with `cairn agent revoke` on the very next request', async () => {
    const token = await admin(['agent', 'create', 'revoked-agent']);
    assert.equal(await pull(token, '127.0.0.13'), 200);
    assert.equal(await pull(token, '127.0.0.13'), 200);
    await admin(['agent', 'revoke', 'revoked-agent']);
    assert.equal(await pull(token, '127.0.0.13'), 401);
  });

  it('refuses a remembered token on a cache it may not pull from, and records its last use', async () => {
    await admin(['cache', 'create', 'other']);
    const token = await admin(['token', 'create', '--scope', 'cache:other:pull', '--name', 'other-only']);
    const info = await fetch(`${server.url}/cache/other/nix-cache-info`, {
      headers: { Authorization: `Bearer ${token}` },
    });
    assert.equal(info.status, 200);
    await info.text();
    assert.equal(await pull(token, '127.0.0.17'), 403);
    assert.equal(await pull(token, '127.0.0.17'), 403);
    const listed = (await (await api('tokens', { method: 'GET' })).json()) as {
      tokens: Array<{ name: string; lastUsedAt: string | null }>;
    };
    assert.notEqual(listed.tokens.find((t) => t.name === 'other-only')?.lastUsedAt ?? null, null);
  });

  it('refuses a token once it expires, though it was used a moment before', async () => {
    const expiresAt = Date.now() + 1500;
    const created = await api('tokens', {
      method: 'POST',
      body: {
        name: 'expiring',
        scopes: ['cache:private:pull'],
        expiresAt: new Date(expiresAt).toISOString(),
      },
    });
    assert.equal(created.status, 201);
    const { token } = (await created.json()) as { token: string };
    assert.equal(await pull(token, '127.0.0.14'), 200);
    assert.equal(await pull(token, '127.0.0.14'), 200);
    await sleep(expiresAt + 100 - Date.now());
    assert.equal(await pull(token, '127.0.0.14'), 401);
  });

  it('counts every attempt with an unknown token as a failure, then accepts a new token at once', async () => {
    const unknown = `cairn_${'C'.repeat(43)}`;
    // The burst is 3: three refusals, then the address is held back, so none was remembered.
    const statuses = [];
    for (let i = 0; i < 4; i++) statuses.push(await pull(unknown, '127.0.0.15'));
    assert.deepEqual(statuses, [401, 401, 401, 429]);
    // A token made after failures from another address works on its first request.
    assert.equal(await pull(unknown, '127.0.0.16'), 401);
    const token = await admin(['token', 'create', '--scope', 'cache:private:pull']);
    assert.equal(await pull(token, '127.0.0.16'), 200);
  });
});
