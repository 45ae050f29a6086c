import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { signInToDashboard } from '../helpers/dashboard-session.ts';
import { type PendingRollout, pendingRollout } from '../helpers/pending-rollout.ts';
import { startTestServer, type TestServer } from '../helpers/server.ts';

interface AuditEntry {
  action: string;
  target: string;
  tokenName: string | null;
  address: string | null;
  detail: Record<string, unknown> | null;
}

describe('rollbackAgent: one audited rollback for the API and the dashboard', () => {
  let server: TestServer;
  let world: PendingRollout;
  const api = (p: string) => `${server.url}/api/v1/workspaces/default/${p}`;
  const admin = () => ({ Authorization: `Bearer ${server.adminToken}`, 'Content-Type': 'application/json' });
  const rollbacks = async () => {
    const res = await fetch(api('audit?limit=1000'), { headers: admin() });
    assert.equal(res.status, 200);
    const { entries } = (await res.json()) as { entries: AuditEntry[] };
    return entries.filter((e) => e.action === 'agent.rollback');
  };

  before(async () => {
    server = await startTestServer();
    world = await pendingRollout(server, 'web1');
  });
  after(() => server?.stop());

  it('records agent.rollback when a signed-in browser rolls back from the dashboard', async () => {
    const session = await signInToDashboard(server.url, server.adminToken);
    assert.deepEqual(await rollbacks(), []);
    const res = await fetch(`${server.url}/agents/${world.agent}/rollback`, {
      method: 'POST',
      redirect: 'manual',
      headers: { 'Content-Type': 'application/x-www-form-urlencoded', Cookie: session.cookie },
      body: new URLSearchParams({ _csrf: session.csrf, to: String(world.deploymentId) }).toString(),
    });
    assert.equal(res.status, 303, await res.text());
    const deploymentId = Number(/^\/deployments\/(\d+)$/.exec(res.headers.get('location') ?? '')?.[1]);
    const deployment = (await (
      await fetch(api(`deployments/${deploymentId}`), { headers: admin() })
    ).json()) as {
      rolloutId: number;
      kind: string;
    };
    assert.equal(deployment.kind, 'rollback');
    const entries = await rollbacks();
    assert.equal(entries.length, 1);
    assert.equal(entries[0]!.target, String(deployment.rolloutId));
    assert.equal(entries[0]!.tokenName, 'admin');
    assert.equal(entries[0]!.address, '127.0.0.1');
    assert.deepEqual(entries[0]!.detail, { agents: { [world.agent]: world.storePath } });
  });

  it('records a dashboard rollback refused for a stale CSRF token nowhere', async () => {
    const session = await signInToDashboard(server.url, server.adminToken);
    const before = (await rollbacks()).length;
    const res = await fetch(`${server.url}/agents/${world.agent}/rollback`, {
      method: 'POST',
      redirect: 'manual',
      headers: { 'Content-Type': 'application/x-www-form-urlencoded', Cookie: session.cookie },
      body: new URLSearchParams({ _csrf: 'stale', to: String(world.deploymentId) }).toString(),
    });
    assert.equal(res.status, 403);
    assert.equal((await rollbacks()).length, before);
  });

  it('records exactly one agent.rollback for a rollback through the API', async () => {
    const before = (await rollbacks()).length;
    const res = await fetch(api(`agents/${world.agent}/rollback`), {
      method: 'POST',
      headers: admin(),
      body: JSON.stringify({ to: world.deploymentId }),
    });
    assert.equal(res.status, 201, await res.clone().text());
    const { id } = (await res.json()) as { id: number };
    const entries = await rollbacks();
    assert.equal(entries.length, before + 1);
    assert.equal(entries[0]!.target, String(id));
  });
});
