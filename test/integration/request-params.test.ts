import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { type DashboardSession, signInToDashboard } from '../helpers/dashboard-session.ts';
import { type PendingRollout, pendingRollout } from '../helpers/pending-rollout.ts';
import { startTestServer, type TestServer } from '../helpers/server.ts';

/** Text that is no id, limit or line number: not a number, negative, and beyond 2^53. */
const BAD = ['abc', '-1', '99999999999999999999'] as const;

interface Entry {
  /** `api` (JSON error body) or `dashboard` (HTML error page). */
  readonly side: 'api' | 'dashboard';
  readonly method: 'GET' | 'POST';
  /** The route as the server registers it, to check that the table misses none. */
  readonly route: string;
  /** The invalid field the error must name. */
  readonly field: string;
  /** The request, with `bad` where the invalid text goes. */
  readonly make: (bad: string) => { path: string; form?: Record<string, string> };
}

describe('ids, limits and line numbers in paths, queries and forms', () => {
  let server: TestServer;
  let world: PendingRollout;
  let session: DashboardSession;
  const d = () => world.deploymentId;
  const e = encodeURIComponent;
  const ws = '/api/v1/workspaces/:ws';
  const api = (p: string) => `/api/v1/workspaces/default/${p}`;

  const TABLE: Entry[] = [
    {
      side: 'dashboard',
      method: 'GET',
      route: '/rollouts/:id/events',
      field: 'id',
      make: (b) => ({ path: `/rollouts/${e(b)}/events` }),
    },
    {
      side: 'dashboard',
      method: 'POST',
      route: '/rollouts/:id/:op',
      field: 'id',
      make: (b) => ({ path: `/rollouts/${e(b)}/pause`, form: {} }),
    },
    {
      side: 'dashboard',
      method: 'POST',
      route: '/rollouts/:id/plan',
      field: 'id',
      make: (b) => ({ path: `/rollouts/${e(b)}/plan`, form: {} }),
    },
    ...(['pause', 'resume', 'promote', 'abort'] as const).map(
      (op): Entry => ({
        side: 'api',
        method: 'POST',
        route: `${ws}/rollouts/:id/${op}`,
        field: 'id',
        make: (b) => ({ path: api(`rollouts/${e(b)}/${op}`) }),
      }),
    ),
    {
      side: 'api',
      method: 'GET',
      route: `${ws}/deployments`,
      field: 'limit',
      make: (b) => ({ path: api(`deployments?limit=${e(b)}`) }),
    },
    {
      side: 'api',
      method: 'GET',
      route: `${ws}/deployments/:id`,
      field: 'id',
      make: (b) => ({ path: api(`deployments/${e(b)}`) }),
    },
    {
      side: 'api',
      method: 'GET',
      route: `${ws}/deployments/:id/logs`,
      field: 'id',
      make: (b) => ({ path: api(`deployments/${e(b)}/logs`) }),
    },
    {
      side: 'api',
      method: 'GET',
      route: `${ws}/deployments/:id/logs`,
      field: 'after',
      make: (b) => ({ path: api(`deployments/${d()}/logs?after=${e(b)}`) }),
    },
    {
      side: 'api',
      method: 'GET',
      route: `${ws}/deployments/diff`,
      field: 'from',
      make: (b) => ({ path: api(`deployments/diff?from=${e(b)}&to=${d()}`) }),
    },
    {
      side: 'api',
      method: 'GET',
      route: `${ws}/deployments/diff`,
      field: 'to',
      make: (b) => ({ path: api(`deployments/diff?from=${d()}&to=${e(b)}`) }),
    },
    {
      side: 'api',
      method: 'GET',
      route: `${ws}/rollouts/:id`,
      field: 'id',
      make: (b) => ({ path: api(`rollouts/${e(b)}`) }),
    },
    {
      side: 'api',
      method: 'GET',
      route: `${ws}/rollouts/:id/events`,
      field: 'id',
      make: (b) => ({ path: api(`rollouts/${e(b)}/events`) }),
    },
    {
      side: 'api',
      method: 'GET',
      route: `${ws}/audit`,
      field: 'limit',
      make: (b) => ({ path: api(`audit?limit=${e(b)}`) }),
    },
    {
      side: 'api',
      method: 'GET',
      route: `${ws}/audit`,
      field: 'before',
      make: (b) => ({ path: api(`audit?before=${e(b)}`) }),
    },
    {
      side: 'dashboard',
      method: 'GET',
      route: '/deployments/:id',
      field: 'id',
      make: (b) => ({ path: `/deployments/${e(b)}` }),
    },
    {
      side: 'dashboard',
      method: 'GET',
      route: '/deployments/:id/events',
      field: 'id',
      make: (b) => ({ path: `/deployments/${e(b)}/events` }),
    },
    {
      side: 'dashboard',
      method: 'GET',
      route: '/deployments/:id/events',
      field: 'after',
      make: (b) => ({ path: `/deployments/${d()}/events?after=${e(b)}` }),
    },
    {
      side: 'dashboard',
      method: 'GET',
      route: '/rollouts/:id',
      field: 'id',
      make: (b) => ({ path: `/rollouts/${e(b)}` }),
    },
    {
      side: 'dashboard',
      method: 'GET',
      route: '/diff',
      field: 'to',
      make: (b) => ({ path: `/diff?to=${e(b)}` }),
    },
    {
      side: 'dashboard',
      method: 'GET',
      route: '/diff',
      field: 'from',
      make: (b) => ({ path: `/diff?from=${e(b)}&to=${d()}` }),
    },
    {
      side: 'dashboard',
      method: 'POST',
      route: '/agents/:name/rollback',
      field: 'to',
      make: (b) => ({ path: `/agents/${world.agent}/rollback`, form: { to: b } }),
    },
  ];

  before(async () => {
    server = await startTestServer();
    world = await pendingRollout(server, 'box');
    session = await signInToDashboard(server.url, server.adminToken);
  });
  after(() => server?.stop());

  it('lists every route whose path takes a numeric id', () => {
    const numeric = server.routes
      .filter((r) => /\/(rollouts|deployments)\/:id|\/rollback$|\/audit$|\/diff$|\/deployments$/.test(r.path))
      .map((r) => `${r.method} ${r.path}`);
    const covered = new Set(TABLE.map((t) => `${t.method} ${t.route}`));
    // The API's rollback takes `to` in a JSON body, checked by its schema (see docs/api.md).
    const missing = numeric.filter((r) => !covered.has(r) && r !== `POST ${ws}/agents/:name/rollback`);
    assert.deepEqual(missing, []);
    for (const c of covered) assert.ok(numeric.includes(c), `${c} is not a route of the server`);
  });

  for (const entry of TABLE) {
    for (const bad of BAD) {
      it(`${entry.side} ${entry.method} ${entry.route}: ${entry.field}=${bad} is 400 INVALID_ARGUMENT naming ${entry.field}`, async () => {
        const { path, form } = entry.make(bad);
        const headers: Record<string, string> =
          entry.side === 'api'
            ? { Authorization: `Bearer ${server.adminToken}` }
            : { Cookie: session.cookie };
        if (form) headers['Content-Type'] = 'application/x-www-form-urlencoded';
        const res = await fetch(`${server.url}${path}`, {
          method: entry.method,
          redirect: 'manual',
          headers,
          ...(form ? { body: new URLSearchParams({ _csrf: session.csrf, ...form }).toString() } : {}),
        });
        const text = await res.text();
        assert.equal(res.status, 400, text);
        if (entry.side === 'api') {
          const body = JSON.parse(text) as {
            code: string;
            message: string;
            validations: Array<{ field: string }>;
          };
          assert.equal(body.code, 'INVALID_ARGUMENT');
          assert.deepEqual(
            body.validations.map((v) => v.field),
            [entry.field],
          );
          assert.match(body.message, new RegExp(`^Cannot [^:]+: ${entry.field}: .*\\(${bad}\\)$`));
        } else {
          assert.match(res.headers.get('content-type') ?? '', /^text\/html/);
          assert.match(text, new RegExp(`Cannot [^:<]+: ${entry.field}: [^<]*\\(${bad}\\)`));
        }
      });
    }
  }

  it('still serves good values, and a limit above the maximum as the maximum', async () => {
    const get = (p: string) =>
      fetch(`${server.url}${api(p)}`, { headers: { Authorization: `Bearer ${server.adminToken}` } });
    for (const p of [
      'deployments?limit=1',
      'deployments?limit=5000',
      'audit?limit=5000',
      'audit?before=1',
      `deployments/${d()}/logs?after=0`,
    ]) {
      assert.equal((await get(p)).status, 200, p);
    }
    assert.equal((await get(`deployments/${d() + 1000}`)).status, 404);
    assert.equal((await get(`rollouts/${world.rolloutId + 1000}`)).status, 404);
    const page = await fetch(`${server.url}/deployments/${d() + 1000}`, {
      headers: { Cookie: session.cookie },
    });
    assert.equal(page.status, 404);
  });
});
