import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { cli, startTestServer, type TestServer } from '../helpers/server.ts';

/** A valid-looking store path for agent `i` (nix32 has no e, o, u or t). */
const pathOf = (i: number) =>
  `/nix/store/${i
    .toString(32)
    .replace(/[eotu]/g, 'x')
    .padStart(32, '0')}-system-${i}`;

/**
 * Issue #23, finding 9: `POST /rollouts` validated a 12 MB body and a quadratic `?agent=` filter
 * before checking the token's scope, so a pull-only token blocked the event loop and got a 400.
 * Authorization now comes first, and the filter is linear.
 */
describe('creating a rollout checks the token before the body', () => {
  let server: TestServer;
  const tokens = new Map<string, string>();
  before(async () => {
    server = await startTestServer();
    const env = { CAIRN_SERVER: server.url, CAIRN_TOKEN: server.adminToken };
    for (const [kind, scope] of [
      ['pull', 'cache:main:pull'],
      ['activate-web1', 'activate:web1'],
    ]) {
      const r = await cli(['token', 'create', '--scope', scope!], env);
      assert.equal(r.code, 0, r.stderr);
      tokens.set(kind!, r.stdout.trim());
    }
  });
  after(async () => {
    await server.stop();
  });

  const post = (path: string, token: string, body: string) =>
    fetch(`${server.url}/api/v1/workspaces/default/${path}`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' },
      body,
    });

  // 100,000 agents in the file (about 7 MB) and the longest ?agent= list a request line holds.
  const agents = Object.fromEntries(Array.from({ length: 100_000 }, (_, i) => [`a${i}`, pathOf(i)]));
  const big = JSON.stringify({ agents, healthChecks: { '*': [{ command: ['/bin/sh'] }] } });
  const filter = Array.from({ length: 1000 }, (_, i) => `agent=a${i * 60}`).join('&');

  for (const path of [`rollouts?${filter}`, 'plan']) {
    it(`answers 403 FORBIDDEN to a pull-only token for POST ${path.split('?')[0]}, whatever its body`, async () => {
      for (const body of [big, '{"not": "a deploy.json"', '{}']) {
        const res = await post(path, tokens.get('pull')!, body);
        const error = (await res.json()) as { code: string; message: string };
        assert.equal(res.status, 403, error.message);
        assert.equal(error.code, 'FORBIDDEN');
        assert.match(error.message, /lacks the admin or activate scope/);
      }
    });
  }

  it('answers 403 naming the agents when an activate token may deploy to some agents but not these', async () => {
    // Its body must be valid (the token may deploy, so the body is read): then the agents it
    // selects are checked before anything else, such as whether they exist.
    const res = await post(`rollouts?${filter}`, tokens.get('activate-web1')!, JSON.stringify({ agents }));
    const error = (await res.json()) as { code: string; message: string };
    assert.equal(res.status, 403, error.message);
    assert.match(error.message, /may not deploy to 'a0', 'a60'/);
  });

  it('still validates the body of a token that may deploy', async () => {
    const res = await post('rollouts', server.adminToken, '{"agents": {}}');
    const error = (await res.json()) as { code: string; validations?: Array<{ field: string }> };
    assert.equal(res.status, 400);
    assert.equal(error.code, 'INVALID_ARGUMENT');
  });
});
