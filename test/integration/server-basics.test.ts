import assert from 'node:assert/strict';
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { cli, startTestServer, type TestServer } from '../helpers/server.ts';

describe('cairn server', () => {
  let server: TestServer;
  let env: Record<string, string>;
  before(async () => {
    server = await startTestServer();
    env = { CAIRN_SERVER: server.url, CAIRN_TOKEN: server.adminToken };
  });
  after(() => server.stop());

  it('answers /healthz and writes the admin token with mode 0600 on first start', async () => {
    const res = await fetch(`${server.url}/healthz`);
    assert.equal(res.status, 200);
    const mode = (await stat(join(server.dataDir, 'admin-token'))).mode & 0o777;
    assert.equal(mode, 0o600);
    assert.match(server.adminToken, /^cairn_[A-Za-z0-9_-]{43}$/);
  });

  it('creates a cache and prints only its public key on stdout', async () => {
    const r = await cli(['cache', 'create', 'basics'], env);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^basics-1:[A-Za-z0-9+/]{43}=\n$/);
    const list = await cli(['cache', 'list'], env);
    assert.match(list.stdout, /basics\s+no\s+0/);
    const again = await cli(['cache', 'create', 'basics'], env);
    assert.equal(again.code, 1);
    assert.match(again.stderr, /name 'basics' is taken/);
  });

  it('rejects bad cache names and bad tokens with clear errors', async () => {
    const bad = await cli(['cache', 'create', 'Bad Name'], env);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /name: must be 1-63 characters/);
    const wrong = await cli(['cache', 'list'], {
      ...env,
      CAIRN_TOKEN: `cairn_${'A'.repeat(43)}`,
    });
    assert.equal(wrong.code, 2);
    assert.match(wrong.stderr, /unknown token/);
    const none = await fetch(`${server.url}/api/v1/workspaces/default/caches`);
    assert.equal(none.status, 401);
    assert.equal(((await none.json()) as { code: string }).code, 'UNAUTHENTICATED');
  });

  it('creates, lists and revokes tokens; a revoked token stops working at once', async () => {
    const created = await cli(['token', 'create', '--scope', 'cache:basics:pull', '--name', 'reader'], env);
    assert.equal(created.code, 0, created.stderr);
    const token = created.stdout.trim();
    const asReader = await fetch(`${server.url}/api/v1/workspaces/default/caches/basics`, {
      headers: { Authorization: `Bearer ${token}` },
    });
    assert.equal(asReader.status, 200);
    const forbidden = await cli(['cache', 'create', 'other'], { ...env, CAIRN_TOKEN: token });
    assert.match(forbidden.stderr, /lacks the admin scope/);
    assert.equal((await cli(['token', 'revoke', 'reader'], env)).code, 0);
    const again = await cli(['token', 'revoke', 'reader'], env);
    assert.equal(again.code, 1);
    assert.match(again.stderr, /no live token with id or name 'reader'/);
    const after = await fetch(`${server.url}/api/v1/workspaces/default/caches/basics`, {
      headers: { Authorization: `Bearer ${token}` },
    });
    assert.equal(after.status, 401);
    const listed = await cli(['token', 'list'], env);
    assert.match(listed.stdout, /reader\s+cache:basics:pull\s+\S+\s+revoked/);
    const badScope = await cli(['token', 'create', '--scope', 'cache:x:write'], env);
    assert.equal(badScope.code, 2);
    assert.match(badScope.stderr, /unknown scope 'cache:x:write'/);
  });

  it('takes a deploy.json over 1 MiB, refuses one over 16 MiB unread, and other bodies over 1 MiB', async () => {
    const post = (path: string, body: string) =>
      fetch(`${server.url}/api/v1/workspaces/default${path}`, {
        method: 'POST',
        headers: { Authorization: `Bearer ${server.adminToken}`, 'Content-Type': 'application/json' },
        body,
      });
    // 20,000 agents, 1.8 MiB: read and validated (they are unknown), nothing created.
    const agents = Object.fromEntries(
      Array.from({ length: 20_000 }, (_, i) => [
        `host-${i}`,
        `/nix/store/${'a'.repeat(32)}-nixos-system-host-${i}-24.05`,
      ]),
    );
    const big = JSON.stringify({ agents });
    assert.ok(big.length > 1024 * 1024);
    const res = await post('/rollouts', big);
    assert.equal(res.status, 400);
    const body = (await res.json()) as {
      code: string;
      validations: Array<{ field: string; message: string }>;
    };
    assert.equal(body.code, 'INVALID_ARGUMENT');
    assert.match(body.validations[0]!.message, /unknown agent 'host-/);
    const tooBig = await post('/rollouts', `{"agents":{"a":"${'x'.repeat(16 * 1024 * 1024)}"}}`);
    assert.equal(tooBig.status, 413);
    assert.equal(((await tooBig.json()) as { code: string }).code, 'TOO_LARGE');
    const otherTooBig = await post('/caches', JSON.stringify({ name: 'x'.repeat(1024 * 1024) }));
    assert.equal(otherTooBig.status, 413);
    const list = (await (
      await fetch(`${server.url}/api/v1/workspaces/default/deployments`, {
        headers: { Authorization: `Bearer ${server.adminToken}` },
      })
    ).json()) as { deployments: unknown[] };
    assert.deepEqual(list.deployments, []);
  });
});
