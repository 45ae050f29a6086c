import assert from 'node:assert/strict';
import { request } from 'node:http';
import { connect } from 'node:net';
import { after, before, describe, it } from 'node:test';
import WebSocket from 'ws';
import { hashTokenSecret } from '../../src/server/auth/token-secret.ts';
import { plainPackage } from '../helpers/deploy-fixtures.ts';
import { buildPackages, RUN_TAG } from '../helpers/nix.ts';
import { cli, startTestServer, type TestServer, testPostgresUrl } from '../helpers/server.ts';

/** Every kind of credential a request can carry. */
const KINDS = [
  'none',
  'malformed',
  'unknown',
  'expired',
  'revoked',
  'admin',
  'activate',
  'activate-other',
  'agent',
  'push',
  'pull',
  'metrics',
  // An enrolment token: valid, and refused everywhere but the enrolment route.
  'enrol',
] as const;
type Kind = (typeof KINDS)[number];
/** Credentials that are not valid at all: 401 everywhere a token is needed. */
const INVALID: readonly Kind[] = ['none', 'malformed', 'unknown', 'expired', 'revoked'];

interface Entry {
  readonly method: string;
  readonly path: string;
  /** Makes one request (a fresh target where the route changes state). */
  readonly make: () => Promise<{ url: string; body?: unknown }>;
  /** Expected status by kind; kinds not named get 401 (invalid) or 403 (valid but not allowed). */
  readonly expect: Partial<Record<Kind, number>>;
  /** Stream routes: only the status line is read. */
  readonly stream?: boolean;
}

describe('authorization: every route, every kind of token', () => {
  let server: TestServer;
  let env: Record<string, string>;
  const tokens = new Map<Kind, string | undefined>();
  let storePath = '';
  let rolloutId = 0;
  let deploymentId = 0;
  let n = 0;
  const api = (p: string) => `${server.url}/api/v1/workspaces/default/${p}`;
  const admin = async (args: string[]) => {
    const r = await cli(args, env);
    assert.equal(r.code, 0, r.stderr);
    return r.stdout.trim();
  };

  before(async () => {
    // This test fails authentication hundreds of times on purpose: the limiter is tested below.
    server = await startTestServer({ failedAuthBurst: 100_000 });
    env = { CAIRN_SERVER: server.url, CAIRN_TOKEN: server.adminToken };
    await admin(['cache', 'create', 'main']);
    const a1 = await admin(['agent', 'create', 'a1']);
    const paths = await buildPackages([plainPackage(`authz-${RUN_TAG}`)]);
    storePath = paths.get(`authz-${RUN_TAG}`)!;
    await admin(['push', 'main', storePath]);
    const rollout = await fetch(api('rollouts'), {
      method: 'POST',
      headers: { Authorization: `Bearer ${server.adminToken}` },
      body: JSON.stringify({ agents: { a1: storePath } }),
    }).then((r) => r.json() as Promise<{ id: number; deployments: Array<{ id: number }> }>);
    rolloutId = rollout.id;
    deploymentId = rollout.deployments[0]!.id;
    const revoked = await admin(['token', 'create', '--scope', 'admin', '--name', 'to-revoke']);
    await admin(['token', 'revoke', 'to-revoke']);
    const expired = await admin([
      'token',
      'create',
      '--scope',
      'admin',
      '--name',
      'short',
      '--expires',
      '1m',
    ]);
    // Expire it now, as time would.
    await server.query(
      (await import('kysely'))
        .sql`update tokens set expires_at = ${Date.now() - 1000} where hash = ${hashTokenSecret(expired)}`,
    );
    tokens.set('none', undefined);
    tokens.set('malformed', 'not-a-cairn-token');
    tokens.set('unknown', `cairn_${'A'.repeat(43)}`);
    tokens.set('expired', expired);
    tokens.set('revoked', revoked);
    tokens.set('admin', server.adminToken);
    tokens.set('activate', await admin(['token', 'create', '--scope', 'activate']));
    tokens.set('activate-other', await admin(['token', 'create', '--scope', 'activate:other']));
    tokens.set('agent', a1);
    tokens.set('push', await admin(['token', 'create', '--scope', 'cache:main:push']));
    tokens.set('pull', await admin(['token', 'create', '--scope', 'cache:main:pull']));
    tokens.set('metrics', await admin(['token', 'create', '--scope', 'metrics']));
    tokens.set('enrol', await admin(['agent', 'enrol-token', 'create', '--uses', '1000']));
  });
  after(() => server.stop());

  const fresh = () => `t${++n}`;
  const freshAgent = async () => {
    const name = fresh();
    await admin(['agent', 'create', name]);
    return name;
  };
  /** A new webhook endpoint's id, as the admin. */
  const freshWebhook = async () =>
    (
      JSON.parse(
        await admin([
          'webhook',
          'create',
          'https://hooks.invalid/x',
          '--event',
          'deployment.failed',
          '--json',
        ]),
      ) as { id: number }
    ).id;
  /** A staged rollout to a1 held at a manual gate (paused too, for resume), as the admin. */
  const stagedRollout = async (paused: boolean) => {
    const res = await fetch(api('rollouts'), {
      method: 'POST',
      headers: { Authorization: `Bearer ${server.adminToken}` },
      body: JSON.stringify({
        agents: { a1: storePath },
        rollout: { batches: [{ size: '100%', advance: 'manual' }] },
      }),
    });
    assert.equal(res.status, 201, await res.clone().text());
    const { id } = (await res.json()) as { id: number };
    if (paused) {
      const p = await fetch(api(`rollouts/${id}/pause`), {
        method: 'POST',
        headers: { Authorization: `Bearer ${server.adminToken}` },
      });
      assert.equal(p.status, 200, await p.text());
    }
    return id;
  };
  const reader = { admin: 200, activate: 200, 'activate-other': 200, agent: 200 } as const;
  /** Only an enrolment token enrols: every other token, valid or not, is no enrolment token (401). */
  const enrolOnly = Object.fromEntries(KINDS.map((k) => [k, k === 'enrol' ? 201 : 401]));
  const table: Entry[] = [
    {
      method: 'POST',
      path: '/api/v1/workspaces/:ws/enrol',
      make: async () => ({ url: api('enrol'), body: { name: fresh() } }),
      expect: enrolOnly,
    },
    {
      method: 'POST',
      path: '/api/v1/workspaces/:ws/enrol-tokens',
      make: async () => ({ url: api('enrol-tokens'), body: { uses: 2 } }),
      expect: { admin: 201 },
    },
    {
      method: 'GET',
      path: '/api/v1/workspaces/:ws/enrol-tokens',
      make: async () => ({ url: api('enrol-tokens') }),
      expect: { admin: 200 },
    },
    {
      method: 'DELETE',
      path: '/api/v1/workspaces/:ws/enrol-tokens/:id',
      make: async () => {
        const created = await fetch(api('enrol-tokens'), {
          method: 'POST',
          headers: { Authorization: `Bearer ${server.adminToken}` },
          body: '{}',
        }).then((r) => r.json() as Promise<{ id: number }>);
        return { url: api(`enrol-tokens/${created.id}`) };
      },
      expect: { admin: 204 },
    },
    {
      method: 'POST',
      path: '/api/v1/workspaces/:ws/agents/:name/approve',
      make: async () => {
        const created = await fetch(api('enrol-tokens'), {
          method: 'POST',
          headers: { Authorization: `Bearer ${server.adminToken}` },
          body: JSON.stringify({ requireApproval: true }),
        }).then((r) => r.json() as Promise<{ token: string }>);
        const name = fresh();
        const enrolled = await fetch(api('enrol'), {
          method: 'POST',
          headers: { Authorization: `Bearer ${created.token}` },
          body: JSON.stringify({ name }),
        });
        assert.equal(enrolled.status, 201);
        return { url: api(`agents/${name}/approve`), body: {} };
      },
      expect: { admin: 200 },
    },
    {
      method: 'GET',
      path: '/healthz',
      make: async () => ({ url: `${server.url}/healthz` }),
      expect: Object.fromEntries(KINDS.map((k) => [k, 200])),
    },
    {
      method: 'GET',
      path: '/metrics',
      make: async () => ({ url: `${server.url}/metrics` }),
      expect: { admin: 200, metrics: 200 },
    },
    {
      method: 'POST',
      path: '/api/v1/workspaces/:ws/caches',
      make: async () => ({ url: api('caches'), body: { name: fresh() } }),
      expect: { admin: 201 },
    },
    {
      method: 'GET',
      path: '/api/v1/workspaces/:ws/caches',
      make: async () => ({ url: api('caches') }),
      expect: { admin: 200, activate: 200, 'activate-other': 200, agent: 200, push: 200, pull: 200 },
    },
    // A cache the token may not read is not found, rather than forbidden: its name is not told.
    {
      method: 'GET',
      path: '/api/v1/workspaces/:ws/caches/:name',
      make: async () => ({ url: api('caches/main') }),
      expect: { admin: 200, agent: 200, push: 200, pull: 200, activate: 404, 'activate-other': 404 },
    },
    {
      method: 'POST',
      path: '/api/v1/workspaces/:ws/caches/:name/missing',
      make: async () => ({ url: api('caches/main/missing'), body: { paths: [storePath] } }),
      expect: { admin: 200, agent: 200, push: 200, pull: 200, activate: 404, 'activate-other': 404 },
    },
    // A cache's retention, quota, collection and pins: admin only (they decide what the fleet
    // can still substitute).
    {
      method: 'PATCH',
      path: '/api/v1/workspaces/:ws/caches/:name',
      make: async () => ({ url: api('caches/main'), body: { quotaBytes: null } }),
      expect: { admin: 200 },
    },
    {
      method: 'GET',
      path: '/api/v1/workspaces/:ws/caches/:name/gc',
      make: async () => ({ url: api('caches/main/gc') }),
      expect: { admin: 200 },
    },
    {
      method: 'POST',
      path: '/api/v1/workspaces/:ws/caches/:name/gc',
      make: async () => ({ url: api('caches/main/gc'), body: {} }),
      expect: { admin: 200 },
    },
    {
      method: 'GET',
      path: '/api/v1/workspaces/:ws/caches/:name/pins',
      make: async () => ({ url: api('caches/main/pins') }),
      expect: { admin: 200 },
    },
    {
      method: 'POST',
      path: '/api/v1/workspaces/:ws/caches/:name/pins',
      make: async () => ({ url: api('caches/main/pins'), body: { storePath } }),
      expect: { admin: 201 },
    },
    {
      method: 'DELETE',
      path: '/api/v1/workspaces/:ws/caches/:name/pins/:path',
      make: async () => {
        await admin(['cache', 'pin', 'main', storePath]);
        return { url: api(`caches/main/pins/${storePath.slice(11)}`) };
      },
      expect: { admin: 204 },
    },
    // Signing keys are the admin's alone, even to list.
    {
      method: 'GET',
      path: '/api/v1/workspaces/:ws/caches/:name/keys',
      make: async () => ({ url: api('caches/main/keys') }),
      expect: { admin: 200 },
    },
    {
      method: 'POST',
      path: '/api/v1/workspaces/:ws/caches/:name/keys',
      make: async () => {
        const name = fresh();
        await admin(['cache', 'create', name]);
        return { url: api(`caches/${name}/keys`) };
      },
      expect: { admin: 201 },
    },
    {
      method: 'DELETE',
      path: '/api/v1/workspaces/:ws/caches/:name/keys/:key',
      make: async () => {
        const name = fresh();
        await admin(['cache', 'create', name]);
        await admin(['cache', 'rotate-key', name]);
        return { url: api(`caches/${name}/keys/${name}-1`) };
      },
      expect: { admin: 200 },
    },
    // The whole server, every workspace's keys: an admin of the default workspace only. On
    // PostgreSQL the admin is told to use pg_dump.
    {
      method: 'GET',
      path: '/api/v1/server/backup',
      make: async () => ({ url: `${server.url}/api/v1/server/backup` }),
      expect: { admin: testPostgresUrl() === undefined ? 200 : 501 },
      stream: true,
    },
    {
      method: 'POST',
      path: '/api/v1/workspaces/:ws/tokens',
      make: async () => ({ url: api('tokens'), body: { name: fresh(), scopes: ['activate'] } }),
      expect: { admin: 201 },
    },
    {
      method: 'GET',
      path: '/api/v1/workspaces/:ws/tokens',
      make: async () => ({ url: api('tokens') }),
      expect: { admin: 200 },
    },
    {
      method: 'DELETE',
      path: '/api/v1/workspaces/:ws/tokens/:id',
      make: async () => {
        const name = fresh();
        await admin(['token', 'create', '--scope', 'activate', '--name', name]);
        return { url: api(`tokens/${name}`) };
      },
      expect: { admin: 204 },
    },
    {
      method: 'GET',
      path: '/api/v1/workspaces/:ws/audit',
      make: async () => ({ url: api('audit') }),
      expect: { admin: 200 },
    },
    {
      method: 'POST',
      path: '/api/v1/workspaces/:ws/agents',
      make: async () => ({ url: api('agents'), body: { name: fresh() } }),
      expect: { admin: 201 },
    },
    {
      method: 'GET',
      path: '/api/v1/workspaces/:ws/agents',
      make: async () => ({ url: api('agents') }),
      expect: { admin: 200, activate: 200, 'activate-other': 200 },
    },
    {
      method: 'GET',
      path: '/api/v1/workspaces/:ws/agents/:name',
      make: async () => ({ url: api('agents/a1') }),
      expect: { admin: 200, activate: 200, 'activate-other': 200, agent: 200 },
    },
    {
      method: 'DELETE',
      path: '/api/v1/workspaces/:ws/agents/:name/token',
      make: async () => ({ url: api(`agents/${await freshAgent()}/token`) }),
      expect: { admin: 204 },
    },
    {
      method: 'POST',
      path: '/api/v1/workspaces/:ws/agents/:name/token',
      make: async () => ({ url: api(`agents/${await freshAgent()}/token`), body: {} }),
      expect: { admin: 201 },
    },
    {
      method: 'PATCH',
      path: '/api/v1/workspaces/:ws/agents/:name/tags',
      make: async () => ({ url: api(`agents/${await freshAgent()}/tags`), body: { add: ['canary'] } }),
      expect: { admin: 200 },
    },
    {
      method: 'POST',
      path: '/api/v1/workspaces/:ws/rollouts',
      make: async () => ({ url: api('rollouts'), body: { agents: { a1: storePath } } }),
      expect: { admin: 201, activate: 201 },
    },
    // Allowed to try; a1 has no earlier succeeded deployment to go back to.
    {
      method: 'POST',
      path: '/api/v1/workspaces/:ws/agents/:name/rollback',
      make: async () => ({ url: api('agents/a1/rollback'), body: {} }),
      expect: { admin: 400, activate: 400 },
    },
    ...(['pause', 'resume', 'promote', 'abort'] as const).map(
      (op): Entry => ({
        method: 'POST',
        path: `/api/v1/workspaces/:ws/rollouts/:id/${op}`,
        make: async () => ({ url: api(`rollouts/${await stagedRollout(op === 'resume')}/${op}`), body: {} }),
        expect: { admin: 200, activate: 200 },
      }),
    ),
    {
      method: 'GET',
      path: '/api/v1/workspaces/:ws/rollouts/:id',
      make: async () => ({ url: api(`rollouts/${rolloutId}`) }),
      expect: reader,
    },
    {
      method: 'GET',
      path: '/api/v1/workspaces/:ws/rollouts/:id/events',
      make: async () => ({ url: api(`rollouts/${rolloutId}/events`) }),
      expect: reader,
      stream: true,
    },
    {
      method: 'GET',
      path: '/api/v1/workspaces/:ws/deployments',
      make: async () => ({ url: api('deployments') }),
      expect: reader,
    },
    {
      method: 'GET',
      path: '/api/v1/workspaces/:ws/deployments/:id',
      make: async () => ({ url: api(`deployments/${deploymentId}`) }),
      expect: reader,
    },
    {
      method: 'GET',
      path: '/api/v1/workspaces/:ws/deployments/diff',
      make: async () => ({ url: api(`deployments/diff?from=${deploymentId}&to=${deploymentId}`) }),
      expect: reader,
    },
    {
      method: 'POST',
      path: '/api/v1/workspaces/:ws/plan',
      make: async () => ({ url: api('plan'), body: { agents: { a1: storePath } } }),
      expect: { admin: 200, activate: 200 },
    },
    // Webhooks: admin only. `.invalid` never resolves: a test event sent there fails quietly.
    {
      method: 'POST',
      path: '/api/v1/workspaces/:ws/webhooks',
      make: async () => ({
        url: api('webhooks'),
        body: { url: 'https://hooks.invalid/x', events: ['deployment.failed'] },
      }),
      expect: { admin: 201 },
    },
    {
      method: 'GET',
      path: '/api/v1/workspaces/:ws/webhooks',
      make: async () => ({ url: api('webhooks') }),
      expect: { admin: 200 },
    },
    {
      method: 'DELETE',
      path: '/api/v1/workspaces/:ws/webhooks/:id',
      make: async () => ({ url: api(`webhooks/${await freshWebhook()}`) }),
      expect: { admin: 204 },
    },
    {
      method: 'POST',
      path: '/api/v1/workspaces/:ws/webhooks/:id/enable',
      make: async () => ({ url: api(`webhooks/${await freshWebhook()}/enable`), body: {} }),
      expect: { admin: 200 },
    },
    {
      method: 'POST',
      path: '/api/v1/workspaces/:ws/webhooks/:id/rotate',
      make: async () => ({ url: api(`webhooks/${await freshWebhook()}/rotate`), body: {} }),
      expect: { admin: 200 },
    },
    {
      method: 'POST',
      path: '/api/v1/workspaces/:ws/webhooks/:id/test',
      make: async () => ({ url: api(`webhooks/${await freshWebhook()}/test`), body: {} }),
      expect: { admin: 202 },
    },
    {
      method: 'GET',
      path: '/api/v1/workspaces/:ws/webhooks/:id/deliveries',
      make: async () => ({ url: api(`webhooks/${await freshWebhook()}/deliveries`) }),
      expect: { admin: 200 },
    },
    {
      method: 'GET',
      path: '/api/v1/workspaces/:ws/deployments/:id/logs',
      make: async () => ({ url: api(`deployments/${deploymentId}/logs`) }),
      expect: reader,
    },
  ];

  it('has an entry for every route the server serves', () => {
    const listed = new Set(table.map((e) => `${e.method} ${e.path}`));
    const missing = server.routes
      .map((r) => `${r.method} ${r.path}`)
      .filter((r) => !listed.has(r) && !DASHBOARD.test(r));
    assert.deepEqual(missing, [], 'routes without an entry in the authorization table');
  });

  for (const entry of table) {
    it(`${entry.method} ${entry.path}`, async () => {
      for (const kind of KINDS) {
        const { url, body } = await entry.make();
        const token = tokens.get(kind);
        const ctrl = new AbortController();
        const res = await fetch(url, {
          method: entry.method,
          headers: token === undefined ? {} : { Authorization: `Bearer ${token}` },
          body: body === undefined ? null : JSON.stringify(body),
          signal: ctrl.signal,
        });
        if (entry.stream) ctrl.abort();
        else await res.text();
        const want = entry.expect[kind] ?? (INVALID.includes(kind) ? 401 : 403);
        assert.equal(res.status, want, `${kind} token: ${entry.method} ${url}`);
      }
    });
  }

  it("refuses the agent WebSocket to every token but the agent's own", async () => {
    for (const kind of KINDS) {
      const token = tokens.get(kind);
      const status = await new Promise<number>((resolve) => {
        const ws = new WebSocket(`${server.url.replace('http', 'ws')}/api/v1/agent/ws?agent=a1`, {
          headers: token === undefined ? {} : { Authorization: `Bearer ${token}` },
        });
        ws.on('unexpected-response', (_req, res) => {
          resolve(res.statusCode ?? 0);
          ws.terminate();
        });
        ws.on('open', () => {
          resolve(101);
          ws.close();
        });
        ws.on('error', () => {});
      });
      assert.equal(status, kind === 'agent' ? 101 : INVALID.includes(kind) ? 401 : 403, `${kind} token`);
    }
  });

  it('checks cache access for every kind of token', async () => {
    const hash = storePath.slice(11, 43);
    for (const kind of KINDS) {
      const token = tokens.get(kind);
      const res = await fetch(`${server.url}/cache/main/${hash}.narinfo`, {
        headers: token === undefined ? {} : { Authorization: `Bearer ${token}` },
      });
      await res.text();
      const want = ['admin', 'agent', 'push', 'pull'].includes(kind)
        ? 200
        : INVALID.includes(kind)
          ? 401
          : 403;
      assert.equal(res.status, want, `${kind} token`);
      const put = await fetch(`${server.url}/cache/main/${hash}.narinfo`, {
        method: 'PUT',
        headers: token === undefined ? {} : { Authorization: `Bearer ${token}` },
        body: 'x',
      });
      await put.text();
      const wantPut = ['admin', 'push'].includes(kind) ? 400 : INVALID.includes(kind) ? 401 : 403;
      assert.equal(put.status, wantPut, `PUT with ${kind} token`);
    }
  });
});

/** Dashboard pages use a session cookie, not tokens; they have their own tests. */
const DASHBOARD = /^(GET|POST) \/(?!api\/|healthz|metrics)/;

describe('limits against slow, large and abusive clients', () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer({ headersTimeoutMs: 2000 });
    await cli(['cache', 'create', 'main'], { CAIRN_SERVER: server.url, CAIRN_TOKEN: server.adminToken });
  });
  after(() => server.stop());

  it('cuts off a client that sends its headers one byte per second', async () => {
    const started = Date.now();
    const closedAfter = await new Promise<number>((resolve) => {
      const socket = connect(server.port, '127.0.0.1');
      const text = 'GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n';
      let i = 0;
      const timer = setInterval(() => {
        if (!socket.destroyed && i < text.length) socket.write(text[i++]!);
      }, 1000);
      socket.on('data', () => {});
      socket.on('error', () => {});
      socket.on('close', () => {
        clearInterval(timer);
        resolve(Date.now() - started);
      });
    });
    assert.ok(closedAfter < 6000, `closed after ${closedAfter} ms`);
  });

  it('refuses a narinfo PUT declaring 10 GB without reading it', async () => {
    const token = (
      await cli(['token', 'create', '--scope', 'cache:main:push'], {
        CAIRN_SERVER: server.url,
        CAIRN_TOKEN: server.adminToken,
      })
    ).stdout.trim();
    const started = Date.now();
    const status = await new Promise<number>((resolve, reject) => {
      const req = request(`${server.url}/cache/main/${'a'.repeat(32)}.narinfo`, {
        method: 'PUT',
        headers: { Authorization: `Bearer ${token}`, 'Content-Length': String(10 * 1024 ** 3) },
      });
      req.on('response', (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      });
      req.on('error', reject);
      req.write('StorePath: ');
    });
    assert.equal(status, 413);
    assert.ok(Date.now() - started < 3000);
  });

  it('answers a burst of 1,000 failed authentications from one address with 429, and still serves another address', async () => {
    const from = (localAddress: string, token: string) =>
      new Promise<{ status: number; retryAfter: string | undefined }>((resolve, reject) => {
        const req = request(`${server.url}/api/v1/workspaces/default/caches`, {
          localAddress,
          headers: { Authorization: `Bearer ${token}` },
          agent: false,
        });
        req.on('response', (res) => {
          res.resume();
          resolve({ status: res.statusCode ?? 0, retryAfter: res.headers['retry-after'] });
        });
        req.on('error', reject);
        req.end();
      });
    const statuses: number[] = [];
    let retryAfter: string | undefined;
    for (let i = 0; i < 1000; i++) {
      const r = await from('127.0.0.2', `cairn_${'B'.repeat(43)}`);
      statuses.push(r.status);
      retryAfter ??= r.retryAfter;
    }
    assert.ok(statuses.filter((s) => s === 429).length > 900, 'most of the burst is refused with 429');
    assert.ok(
      statuses.slice(0, 5).every((s) => s === 401),
      'the first failures are plain 401s',
    );
    assert.match(retryAfter ?? '', /^\d+$/);
    assert.equal((await from('127.0.0.3', server.adminToken)).status, 200);
    // Only the burst and what the bucket refilled meanwhile (1 per second) were let through.
    assert.ok(statuses.filter((s) => s === 401).length <= 30 + 60, 'few failures were let through');
  });
});

describe('audit log', () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer();
  });
  after(() => server.stop());

  it('records who created, revoked and deployed, from which address', async () => {
    const env = { CAIRN_SERVER: server.url, CAIRN_TOKEN: server.adminToken };
    await cli(['cache', 'create', 'main'], env);
    await cli(['agent', 'create', 'web1'], env);
    await cli(['token', 'create', '--scope', 'activate', '--name', 'ci'], env);
    await cli(['token', 'revoke', 'ci'], env);
    await cli(['agent', 'revoke', 'web1'], env);
    const r = await cli(['audit', '--json'], env);
    assert.equal(r.code, 0, r.stderr);
    const entries = JSON.parse(r.stdout) as Array<{
      action: string;
      target: string;
      tokenName: string;
      address: string;
    }>;
    assert.deepEqual(entries.map((e) => e.action).reverse(), [
      'cache.create',
      'agent.create',
      'token.create',
      'token.revoke',
      'agent.revoke',
    ]);
    assert.ok(entries.every((e) => e.tokenName === 'admin' && e.address === '127.0.0.1'));
    const forbidden = await fetch(`${server.url}/api/v1/workspaces/default/audit`, {
      headers: {
        Authorization: `Bearer ${(await cli(['token', 'create', '--scope', 'activate'], env)).stdout.trim()}`,
      },
    });
    assert.equal(forbidden.status, 403);
  });
});
