import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { migrate } from '../../src/server/db/migrations.ts';
import { type OpenDatabase, openDatabase } from '../../src/server/db/open-database.ts';
import { deleteExpiredLogs } from '../../src/server/retention/log-retention.ts';
import { createTestDatabase, type TestDatabase } from '../helpers/server.ts';

const DAY = 24 * 60 * 60 * 1000;

describe('deleteExpiredLogs', () => {
  let testDb: TestDatabase;
  let database: OpenDatabase;
  const now = Date.UTC(2026, 10, 25);
  before(async () => {
    testDb = await createTestDatabase();
    database = openDatabase(testDb.config);
    await migrate(database.db as never, database.dialect);
  });
  after(async () => {
    await database?.db.destroy();
    await testDb?.drop();
  });

  it('deletes the lines of deployments finished before the cutoff, keeps the rest, and marks them', async () => {
    const db = database.db;
    const ws = await db
      .insertInto('workspaces')
      .values({ name: 'w', created_at: now })
      .returning('id')
      .executeTakeFirstOrThrow();
    const agent = await db
      .insertInto('agents')
      .values({ workspace_id: ws.id, name: 'a', token_id: 't', created_at: now, online: 0 })
      .returning('id')
      .executeTakeFirstOrThrow();
    const rollout = await db
      .insertInto('rollouts')
      .values({ workspace_id: ws.id, created_at: now, created_by: 'test' })
      .returning('id')
      .executeTakeFirstOrThrow();
    const deployment = async (state: string, finishedAt: number | null) =>
      (
        await db
          .insertInto('deployments')
          .values({
            rollout_id: rollout.id,
            workspace_id: ws.id,
            agent_id: agent.id,
            store_path: `/nix/store/${'a'.repeat(32)}-x`,
            exit4: 'fail',
            state,
            created_at: now - 60 * DAY,
            finished_at: finishedAt,
          })
          .returning('id')
          .executeTakeFirstOrThrow()
      ).id;
    const old = await deployment('succeeded', now - 31 * DAY);
    const recent = await deployment('failed', now - 29 * DAY);
    const running = await deployment('running', null);
    for (const id of [old, recent, running]) {
      await db
        .insertInto('deployment_logs')
        .values([1, 2, 3].map((seq) => ({ deployment_id: id, seq, t: now - 60 * DAY, text: `line ${seq}` })))
        .execute();
      await db
        .insertInto('deployment_log_sources')
        .values({ deployment_id: id, src: 'agent-1', last_n: 2 })
        .execute();
    }
    assert.equal(await deleteExpiredLogs(db, { days: 30, now, dialect: database.dialect }), 1);
    const left = await db.selectFrom('deployment_logs').select('deployment_id').execute();
    assert.deepEqual([...new Set(left.map((r) => r.deployment_id))].sort(), [recent, running].sort());
    // The marks that drop lines sent twice go with the lines.
    const sources = await db.selectFrom('deployment_log_sources').select('deployment_id').execute();
    assert.deepEqual(sources.map((r) => r.deployment_id).sort(), [recent, running].sort());
    const marked = await db
      .selectFrom('deployments')
      .select(['id', 'logs_expired_at'])
      .orderBy('id')
      .execute();
    assert.deepEqual(
      marked.map((r) => [r.id, r.logs_expired_at === null ? null : Number(r.logs_expired_at)]),
      [
        [old, now],
        [recent, null],
        [running, null],
      ],
    );
    // A second round finds nothing more to do.
    assert.equal(await deleteExpiredLogs(db, { days: 30, now, dialect: database.dialect }), 0);
  });

  it('run twice at once (two replicas), deletes each expired deployment’s logs once, counted once', async () => {
    const db = database.db;
    const ws = await db
      .insertInto('workspaces')
      .values({ name: 'concurrent', created_at: now })
      .returning('id')
      .executeTakeFirstOrThrow();
    const agent = await db
      .insertInto('agents')
      .values({ workspace_id: ws.id, name: 'a', token_id: 't2', created_at: now, online: 0 })
      .returning('id')
      .executeTakeFirstOrThrow();
    const rollout = await db
      .insertInto('rollouts')
      .values({ workspace_id: ws.id, created_at: now, created_by: 'test' })
      .returning('id')
      .executeTakeFirstOrThrow();
    // More than two batches of 200 expired deployments, and a few kept.
    const expired = 450;
    const finished = [
      ...Array.from({ length: expired }, () => now - 40 * DAY),
      ...Array.from({ length: 5 }, () => now - DAY),
    ];
    const ids = (
      await db
        .insertInto('deployments')
        .values(
          finished.map((finishedAt) => ({
            rollout_id: rollout.id,
            workspace_id: ws.id,
            agent_id: agent.id,
            store_path: `/nix/store/${'b'.repeat(32)}-x`,
            exit4: 'fail',
            state: 'succeeded',
            created_at: now - 60 * DAY,
            finished_at: finishedAt,
          })),
        )
        .returning('id')
        .execute()
    ).map((r) => r.id);
    await db
      .insertInto('deployment_logs')
      .values(ids.map((id) => ({ deployment_id: id, seq: 1, t: now - 60 * DAY, text: 'line' })))
      .execute();

    const options = { days: 30, now, dialect: database.dialect };
    const counts = await Promise.all([deleteExpiredLogs(db, options), deleteExpiredLogs(db, options)]);
    assert.equal(counts[0]! + counts[1]!, expired, `counted ${counts.join(' + ')}`);
    const left = await db
      .selectFrom('deployment_logs')
      .select('deployment_id')
      .where('deployment_id', 'in', ids)
      .execute();
    assert.deepEqual(
      left.map((r) => r.deployment_id).sort((x, y) => x - y),
      ids.slice(expired),
    );
    const marked = await db
      .selectFrom('deployments')
      .select('id')
      .where('id', 'in', ids)
      .where('logs_expired_at', 'is not', null)
      .execute();
    assert.equal(marked.length, expired);
  });
});
