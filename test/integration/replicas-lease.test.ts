import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { type AgentProcess, startAgent } from '../helpers/agent-process.ts';
import { cli, createTestDatabase, testPostgresUrl } from '../helpers/server.ts';
import { freePort, type ServerProcess, spawnServer } from '../helpers/server-process.ts';

/** The replicas' lease, shortened from 20 s so that the test need not wait long. */
const LEASE_SECONDS = 2;

/**
 * A replica that dies without closing its agents' connections (SIGKILL): the other replica
 * marks those agents offline once the dead one's lease expired. Two real server processes on
 * one PostgreSQL database, and real `cairn deploy agent` processes.
 */
describe('the replicas’ lease on the agents they hold', {
  skip: !testPostgresUrl() && 'CAIRN_TEST_DATABASE_URL unset',
}, () => {
  const cleanup: Array<() => Promise<unknown>> = [];
  let tmp: string;
  let a: ServerProcess;
  let b: ServerProcess;
  let viaA: Record<string, string>;
  before(async () => {
    tmp = await mkdtemp(join(tmpdir(), 'cairn-replicas-lease-'));
    cleanup.push(() => rm(tmp, { recursive: true, force: true }));
    const db = await createTestDatabase();
    cleanup.push(() => db.drop());
    const database = (db.config as { url: string }).url;
    const env = { CAIRN_REPLICA_LEASE_SECONDS: String(LEASE_SECONDS) };
    a = await spawnServer({ port: await freePort(), dataDir: join(tmp, 'a'), database, env });
    cleanup.push(() => a.kill('SIGKILL'));
    b = await spawnServer({ port: await freePort(), dataDir: join(tmp, 'b'), database, env });
    cleanup.push(() => b.kill('SIGKILL'));
    const adminToken = (await readFile(join(tmp, 'a', 'admin-token'), 'utf8')).trim();
    viaA = { CAIRN_SERVER: a.url, CAIRN_TOKEN: adminToken };
  });
  after(async () => {
    for (const c of cleanup.reverse()) await c().catch(() => {});
  });

  /** `cairn agent list --json` through replica A: each agent's name and whether it is online. */
  async function onlineViaA(): Promise<Map<string, boolean>> {
    const r = await cli(['agent', 'list', '--json'], viaA);
    assert.equal(r.code, 0, r.stderr);
    const agents = JSON.parse(r.stdout) as Array<{ name: string; online: boolean }>;
    return new Map(agents.map((x) => [x.name, x.online]));
  }

  async function agentOn(server: ServerProcess, name: string): Promise<AgentProcess> {
    const created = await cli(['agent', 'create', name], viaA);
    assert.equal(created.code, 0, created.stderr);
    const agent = await startAgent({
      name,
      token: created.stdout.trim(),
      server: server.url,
      profile: join(tmp, `profile-${name}`),
    });
    cleanup.push(() => agent.stop());
    await agent.waitFor(/connected to/);
    return agent;
  }

  it('marks offline, within the lease, the agents of a SIGKILLed replica that do not come back; others stay online', async () => {
    await agentOn(a, 'stays');
    const lost = await agentOn(b, 'lost');
    assert.deepEqual(
      await onlineViaA(),
      new Map([
        ['lost', true],
        ['stays', true],
      ]),
    );

    // B dies without a word, and its agent cannot come back (it only knows B, and is killed).
    await b.kill('SIGKILL');
    const killedAt = Date.now();
    lost.child.kill('SIGKILL');

    let online = await onlineViaA();
    while (online.get('lost') === true) {
      // The lease, plus a quarter lease until A's next sweep, plus room for a loaded machine.
      assert.ok(Date.now() - killedAt < (LEASE_SECONDS * 1.25 + 3) * 1000, 'lost is still online');
      await new Promise((r) => setTimeout(r, 200));
      online = await onlineViaA();
    }
    assert.equal(online.get('lost'), false);
    assert.equal(online.get('stays'), true);

    // A renews its own lease: its agent is still online a whole lease period later.
    await new Promise((r) => setTimeout(r, LEASE_SECONDS * 1500));
    assert.equal((await onlineViaA()).get('stays'), true);
  });
});
