import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import pg from 'pg';
import pino from 'pino';
import { DeploymentRepository } from '../../src/server/db/deployment-repository.ts';
import { migrate } from '../../src/server/db/migrations.ts';
import { type OpenDatabase, openDatabase } from '../../src/server/db/open-database.ts';
import { LocalEventBus } from '../../src/server/events/event-bus.ts';
import { ROLLOUT_TICK_LOCK, RolloutEngine } from '../../src/server/rollouts/rollout-engine.ts';
import { createTestDatabase, type TestDatabase, testPostgresUrl } from '../helpers/server.ts';

describe('the rollout tick on replicas sharing PostgreSQL', {
  skip: !testPostgresUrl() && 'CAIRN_TEST_DATABASE_URL unset',
}, () => {
  let testDb: TestDatabase;
  let database: OpenDatabase;
  before(async () => {
    testDb = await createTestDatabase();
    database = openDatabase(testDb.config);
    await migrate(database.db as never, database.dialect);
    const now = Date.now();
    const ws = await database.db
      .insertInto('workspaces')
      .values({ name: 'w', created_at: now })
      .returning('id')
      .executeTakeFirstOrThrow();
    await database.db
      .insertInto('rollouts')
      .values({ workspace_id: ws.id, created_at: now, created_by: 'test', policy: '{}', state: 'running' })
      .execute();
  });
  after(async () => {
    await database?.db.destroy();
    await testDb?.drop();
  });

  /** An engine (a replica's) whose decisions are counted, each taking `ms`. */
  const engine = (ms = 0) => {
    const e = new RolloutEngine({
      db: database.db,
      deployments: new DeploymentRepository(database.db),
      bus: new LocalEventBus(),
      log: pino({ level: 'silent' }),
      now: Date.now,
      dialect: 'postgres',
    });
    const counted = { e, decided: 0 };
    e.store.snapshot = async () => {
      counted.decided++;
      await new Promise((r) => setTimeout(r, ms));
      return undefined;
    };
    return counted;
  };

  it('is run by one replica at a time: two ticking at once decide the active rollout once', async () => {
    const a = engine(300);
    const b = engine(300);
    await Promise.all([a.e.tick(), b.e.tick()]);
    assert.equal(a.decided + b.decided, 1);
    // Claimed per tick, not for good: the next tick is anyone's again.
    await b.e.tick();
    assert.equal(a.decided + b.decided, 2);
    a.e.close();
    b.e.close();
  });

  it('is skipped while another holds the claim', async () => {
    const holder = new pg.Client({ connectionString: (testDb.config as { url: string }).url });
    await holder.connect();
    const a = engine();
    try {
      await holder.query('select pg_advisory_lock($1::bigint)', [ROLLOUT_TICK_LOCK]);
      await a.e.tick();
      assert.equal(a.decided, 0);
      await holder.query('select pg_advisory_unlock($1::bigint)', [ROLLOUT_TICK_LOCK]);
      await a.e.tick();
      assert.equal(a.decided, 1);
    } finally {
      a.e.close();
      await holder.end();
    }
  });
});
