import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { HELLO_WRITES, OBSERVED_WRITES, OFFLINE_WRITES } from '../../src/server/db/agent-repository.ts';
import { FINISH_WRITES, STEP_WRITES } from '../../src/server/db/deployment-repository.ts';
import { migrate } from '../../src/server/db/migrations.ts';
import { type OpenDatabase, openDatabase } from '../../src/server/db/open-database.ts';
import { WriteBatch } from '../../src/server/db/write-batch.ts';
import { insertAgent, insertDeployment, insertRollout, insertWorkspace } from '../helpers/db-rows.ts';
import { createTestDatabase, type TestDatabase } from '../helpers/server.ts';

/**
 * The write batch's grouped steps on the test's database (SQLite, or PostgreSQL with
 * CAIRN_TEST_DATABASE_URL): steps queued in a row are written in one statement, with the same
 * outcome as one statement each.
 */
describe('writes grouped by the write batch', () => {
  let testDb: TestDatabase;
  let database: OpenDatabase;
  const ids: number[] = [];
  let agentId = 0;
  let otherAgent = 0;
  before(async () => {
    testDb = await createTestDatabase();
    database = openDatabase(testDb.config);
    await migrate(database.db as never, database.dialect);
    const db = database.db;
    const ws = await insertWorkspace(db);
    agentId = await insertAgent(db, ws, 'a');
    otherAgent = await insertAgent(db, ws, 'b');
    const rolloutId = await insertRollout(db, ws);
    for (const state of ['pending', 'running', 'cancelled', 'pending']) {
      ids.push(
        await insertDeployment(db, {
          rolloutId,
          workspaceId: ws,
          agentId,
          storePath: '/nix/store/00000000000000000000000000000000-x',
          state,
        }),
      );
    }
  });
  after(async () => {
    await database?.db.destroy();
    await testDb?.drop();
  });

  it('records open deployments’ steps, the later of two for one deployment (started at the first), and refuses the rest', async () => {
    const batch = new WriteBatch(database.db);
    const [d0, d1, d2, d3] = ids as [number, number, number, number];
    const results = await Promise.all([
      batch.writeGrouped(STEP_WRITES, { id: d0, agentId, step: 'downloading', at: 100 }),
      batch.writeGrouped(STEP_WRITES, { id: d1, agentId, step: 'activating', at: 100 }),
      batch.writeGrouped(STEP_WRITES, { id: d0, agentId, step: 'activating', at: 101 }),
      // Cancelled meanwhile: stays cancelled.
      batch.writeGrouped(STEP_WRITES, { id: d2, agentId, step: 'downloading', at: 100 }),
      // Not this agent's deployment.
      batch.writeGrouped(STEP_WRITES, { id: d3, agentId: otherAgent, step: 'downloading', at: 100 }),
    ]);
    assert.deepEqual(results, [true, true, true, false, false]);
    const rows = await database.db
      .selectFrom('deployments')
      .select(['id', 'state', 'step', 'started_at'])
      .where('id', 'in', ids)
      .orderBy('id')
      .execute();
    assert.deepEqual(
      rows.map((r) => [r.state, r.step, r.started_at === null ? null : Number(r.started_at)]),
      [
        ['running', 'activating', 100],
        // Started before: keeps when it started.
        ['running', 'activating', 5],
        ['cancelled', null, null],
        ['pending', null, null],
      ],
    );
  });

  it('records agents’ reports, the later of two for one agent, and marks offline only the newest connection', async () => {
    const batch = new WriteBatch(database.db);
    const observed = (storePath: string | null, generation: number | null) => ({
      storePath,
      generation,
      kind: 'nixos' as const,
      system: 'x86_64-linux',
      hostname: 'h',
      agentVersion: '1',
      nixVersion: '2.8',
      profile: '/nix/var/nix/profiles/system',
    });
    const p1 = '/nix/store/11111111111111111111111111111111-one';
    const p2 = '/nix/store/22222222222222222222222222222222-two';
    await database.db.updateTable('agents').set({ connection_epoch: 7, online: 1 }).execute();
    await Promise.all([
      batch.writeGrouped(OBSERVED_WRITES, { id: agentId, observed: observed(p1, 1), at: 200 }),
      batch.writeGrouped(OBSERVED_WRITES, { id: otherAgent, observed: observed(null, null), at: 200 }),
      batch.writeGrouped(OBSERVED_WRITES, { id: agentId, observed: observed(p2, 2), at: 201 }),
      // An older connection of agent a closing late: a stays online.
      batch.writeGrouped(OFFLINE_WRITES, { id: agentId, epoch: 6, at: 300 }),
      batch.writeGrouped(OFFLINE_WRITES, { id: otherAgent, epoch: 7, at: 300 }),
    ]);
    const rows = await database.db
      .selectFrom('agents')
      .select(['id', 'online', 'store_path', 'generation', 'kind', 'last_seen_at'])
      .where('id', 'in', [agentId, otherAgent])
      .orderBy('id')
      .execute();
    assert.deepEqual(
      rows.map((r) => [r.online, r.store_path, r.generation, r.kind, Number(r.last_seen_at)]),
      [
        [1, p2, 2, 'nixos', 201],
        [0, null, null, 'nixos', 300],
      ],
    );
  });

  it('keeps the order of writes to each row when interleaved writes of several agents are grouped', async () => {
    const batch = new WriteBatch(database.db);
    const [d0, d1] = ids as [number, number];
    await database.db.updateTable('agents').set({ connection_epoch: 7, online: 0 }).execute();
    await database.db
      .updateTable('deployments')
      .set({ state: 'pending', step: null, started_at: null, finished_at: null })
      .where('id', 'in', [d0, d1])
      .execute();
    const observed = {
      storePath: null,
      generation: null,
      kind: 'nixos' as const,
      system: 'x86_64-linux',
      hostname: 'h',
      agentVersion: '1',
      nixVersion: '2.8',
      profile: '/nix/var/nix/profiles/system',
    };
    const ok = { state: 'succeeded' as const, step: null, reason: null, rebootRequired: false };
    const failed = { state: 'failed' as const, step: 'activating', reason: 'exit 1', rebootRequired: false };
    const results = await Promise.all([
      batch.writeGrouped(STEP_WRITES, { id: d0, agentId, step: 'downloading', at: 400 }),
      batch.writeGrouped(HELLO_WRITES, { id: agentId, observed, at: 400, replicaId: 'r1' }),
      batch.writeGrouped(STEP_WRITES, { id: d1, agentId, step: 'downloading', at: 400 }),
      batch.writeGrouped(FINISH_WRITES, { id: d0, agentId, result: ok, at: 401 }),
      // A step arriving after the result: the deployment is over, the step changes nothing.
      batch.writeGrouped(STEP_WRITES, { id: d0, agentId, step: 'activating', at: 402 }),
      batch.writeGrouped(HELLO_WRITES, { id: otherAgent, observed, at: 402, replicaId: 'r1' }),
      batch.committed(),
      // Agent a says hello again (epoch 9), then its first connection (epoch 8) closes: a stays online.
      batch.writeGrouped(HELLO_WRITES, { id: agentId, observed, at: 403, replicaId: 'r2' }),
      batch.writeGrouped(OFFLINE_WRITES, { id: agentId, epoch: 8, at: 404 }),
      batch.writeGrouped(FINISH_WRITES, { id: d1, agentId, result: failed, at: 405 }),
      // A second result for d1: the first one counts.
      batch.writeGrouped(FINISH_WRITES, { id: d1, agentId, result: ok, at: 406 }),
      // Agent b's connection (epoch 8) closes: b goes offline.
      batch.writeGrouped(OFFLINE_WRITES, { id: otherAgent, epoch: 8, at: 407 }),
    ]);
    assert.deepEqual(results, [
      true,
      8,
      true,
      true,
      false,
      8,
      undefined,
      9,
      undefined,
      true,
      false,
      undefined,
    ]);
    const deployments = await database.db
      .selectFrom('deployments')
      .select(['state', 'step', 'reason'])
      .where('id', 'in', [d0, d1])
      .orderBy('id')
      .execute();
    assert.deepEqual(
      deployments.map((d) => [d.state, d.step, d.reason]),
      [
        ['succeeded', null, null],
        ['failed', 'activating', 'exit 1'],
      ],
    );
    const agents = await database.db
      .selectFrom('agents')
      .select(['online', 'connection_epoch', 'replica_id'])
      .where('id', 'in', [agentId, otherAgent])
      .orderBy('id')
      .execute();
    assert.deepEqual(
      agents.map((a) => [a.online, a.connection_epoch, a.replica_id]),
      [
        [1, 9, 'r2'],
        [0, 8, 'r1'],
      ],
    );
  });
});
