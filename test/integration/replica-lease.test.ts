import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import pino from 'pino';
import { ReplicaLease } from '../../src/server/agents/replica-lease.ts';
import { migrate } from '../../src/server/db/migrations.ts';
import { type OpenDatabase, openDatabase } from '../../src/server/db/open-database.ts';
import { ReplicaLeaseRepository } from '../../src/server/db/replica-lease-repository.ts';
import { createTestDatabase, type TestDatabase } from '../helpers/server.ts';

/** Long enough that the leases' own timers (a quarter of it) never fire during a case. */
const LEASE_MS = 20_000;

/**
 * The lease and sweep of {@link ReplicaLease} on the test's database (SQLite, or PostgreSQL with
 * CAIRN_TEST_DATABASE_URL), driven round by round with a clock the test sets. The end-to-end
 * case, with replicas killed for real, is replicas-lease.test.ts.
 */
describe('replica leases', () => {
  let testDb: TestDatabase;
  let database: OpenDatabase;
  let clock = 1_000_000;
  let workspaceId: number;
  before(async () => {
    testDb = await createTestDatabase();
    database = openDatabase(testDb.config);
    await migrate(database.db as never, database.dialect);
    workspaceId = (
      await database.db
        .insertInto('workspaces')
        .values({ name: 'w', created_at: clock })
        .returning('id')
        .executeTakeFirstOrThrow()
    ).id;
  });
  after(async () => {
    await database?.db.destroy();
    await testDb?.drop();
  });

  /** A replica's lease; `holds` names the agents it has connections of (their rows' names). */
  const lease = (replicaId: string, holds: () => string[] = () => []) => {
    const lapses: number[] = [];
    const reclaimed: number[][] = [];
    const l = new ReplicaLease({
      db: database.db,
      replicaId,
      log: pino({ level: 'silent' }),
      now: () => clock,
      leaseMs: LEASE_MS,
      held: () => holds().map((name) => ids.get(name) ?? -1),
      onReclaimed: (agentIds) => {
        lapses.push(clock);
        reclaimed.push([...agentIds]);
      },
      dialect: database.dialect,
    });
    return Object.assign(l, { lapses, reclaimed });
  };
  /** Agent ids by name, as agentsOn created them. */
  const ids = new Map<string, number>();

  /** Agents named `prefix-0`… online, held by `replicaId`. */
  async function agentsOn(replicaId: string, prefix: string, count: number): Promise<void> {
    await database.db
      .insertInto('agents')
      .values(
        Array.from({ length: count }, (_, i) => ({
          workspace_id: workspaceId,
          name: `${prefix}-${i}`,
          token_id: `${prefix}-${i}`,
          created_at: clock,
          online: 1,
          replica_id: replicaId,
        })),
      )
      .returning(['id', 'name'])
      .execute()
      .then((rows) => {
        for (const r of rows) ids.set(r.name, r.id);
      });
  }

  async function online(prefix: string): Promise<number> {
    const rows = await database.db
      .selectFrom('agents')
      .select('online')
      .where('name', 'like', `${prefix}-%`)
      .execute();
    return rows.filter((r) => r.online === 1).length;
  }

  it('marks offline the agents of a replica that stopped renewing, once its lease expired, and no others', async () => {
    const alive = lease('alive');
    // "dead" still has connections of orphan-0 and orphan-1 when it wakes up; orphan-1 has
    // said hello to "alive" meanwhile (below), so only orphan-0 is dead's again.
    const dead = lease('dead', () => ['orphan-0', 'orphan-1']);
    await alive.start();
    await dead.start();
    await agentsOn('alive', 'kept', 3);
    await agentsOn('dead', 'orphan', 2);

    // Within the lease: nothing is swept.
    clock += LEASE_MS - 1;
    await alive.renewAndSweep();
    assert.equal(await online('orphan'), 2);

    // "dead" never renews: past its expiry, alive's round sweeps its agents and its lease row.
    clock += 2;
    await alive.renewAndSweep();
    assert.equal(await online('orphan'), 0);
    assert.equal(await online('kept'), 3);
    const leases = await database.db.selectFrom('replica_leases').select('replica_id').execute();
    assert.deepEqual(
      leases.map((r) => r.replica_id),
      ['alive'],
    );
    assert.deepEqual(alive.lapses, []);

    await database.db
      .updateTable('agents')
      .set({ online: 1, replica_id: 'alive' })
      .where('name', '=', 'orphan-1')
      .execute();

    // "dead" was only stalled: its next round finds its lease gone, takes a new one and records
    // online again the agents it still holds, keeping their connections open (no reconnect storm).
    await dead.renewAndSweep();
    assert.deepEqual(dead.lapses, [clock]);
    assert.deepEqual(dead.reclaimed, [[ids.get('orphan-0')]]);
    assert.equal(await online('orphan'), 2);
    const holder = await database.db
      .selectFrom('agents')
      .select(['name', 'replica_id'])
      .where('name', 'like', 'orphan-%')
      .orderBy('name')
      .execute();
    assert.deepEqual(holder, [
      { name: 'orphan-0', replica_id: 'dead' },
      { name: 'orphan-1', replica_id: 'alive' },
    ]);
    assert.equal(await online('kept'), 3);
    await dead.renewAndSweep();
    assert.deepEqual(dead.lapses, [clock], 'a lease renewed in time is not lapsed again');
    await dead.close();
    await alive.close();
  });

  it('never sweeps its own agents, however late its own renewal came', async () => {
    const late = lease('late', () => ['mine-0', 'mine-1']);
    await late.start();
    await agentsOn('late', 'mine', 2);
    // Its timer did not run for longer than the lease (a stalled event loop): its own round
    // renews, and its sweep leaves its own agents online even if the renewal had not landed.
    clock += LEASE_MS * 3;
    const repo = new ReplicaLeaseRepository(database.db);
    const swept = await repo.sweepExpired(clock, {
      lockRows: database.dialect === 'postgres',
      except: 'late',
    });
    assert.deepEqual(swept.replicas, []);
    assert.equal(await online('mine'), 2);
    await late.renewAndSweep();
    assert.equal(await online('mine'), 2);
    assert.deepEqual(late.lapses, []);
    await late.close();
  });

  it('two replicas sweeping at once mark each dead replica’s agents offline once', async () => {
    for (const r of ['gone-1', 'gone-2', 'gone-3']) {
      await database.db
        .insertInto('replica_leases')
        .values({ replica_id: r, started_at: clock, expires_at: clock + LEASE_MS })
        .execute();
      await agentsOn(r, `swept-${r}`, 4);
    }
    clock += LEASE_MS + 1;
    const repo = new ReplicaLeaseRepository(database.db);
    const lockRows = database.dialect === 'postgres';
    const [x, y] = await Promise.all([
      repo.sweepExpired(clock, { lockRows }),
      repo.sweepExpired(clock, { lockRows }),
    ]);
    assert.equal(x.agents.length + y.agents.length, 12);
    assert.deepEqual([...x.replicas, ...y.replicas].sort(), ['gone-1', 'gone-2', 'gone-3']);
    for (const r of ['gone-1', 'gone-2', 'gone-3']) assert.equal(await online(`swept-${r}`), 0);
  });
});
