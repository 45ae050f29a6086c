import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { sql } from 'kysely';
import {
  ClosureRepository,
  MAX_REPORTED_CLOSURE_PATHS,
} from '../../src/server/closures/closure-repository.ts';
import { migrate } from '../../src/server/db/migrations.ts';
import { type OpenDatabase, openDatabase } from '../../src/server/db/open-database.ts';
import { insertAgent, insertDeployment, insertRollout, insertWorkspace } from '../helpers/db-rows.ts';
import { legacyMigrate } from '../helpers/legacy-migrate.ts';
import { createTestDatabase, type TestDatabase } from '../helpers/server.ts';

/**
 * A fleet of identical machines reports the same closure at the same moment (on the test's
 * database: SQLite, or PostgreSQL with CAIRN_TEST_DATABASE_URL). Every report must end, and
 * every deployment to the root must get the closure's size, however the reports are ordered.
 */
describe('closure reports of many agents at once', () => {
  let testDb: TestDatabase;
  let database: OpenDatabase;
  let workspaceId = 0;
  const root = '/nix/store/33333333333333333333333333333333-system';
  const dep = '/nix/store/44444444444444444444444444444444-dep';
  const agents = 40;
  const deployments: number[] = [];
  let rolloutId = 0;
  before(async () => {
    testDb = await createTestDatabase();
    database = openDatabase(testDb.config);
    await migrate(database.db as never, database.dialect);
    const db = database.db;
    workspaceId = await insertWorkspace(db);
    rolloutId = await insertRollout(db, workspaceId);
    for (let i = 0; i < agents; i++) {
      const agentId = await insertAgent(db, workspaceId, `a${i}`);
      deployments.push(
        await insertDeployment(db, { rolloutId, workspaceId, agentId, storePath: root, state: 'running' }),
      );
    }
  });
  after(async () => {
    await database?.db.destroy();
    await testDb?.drop();
  });

  it('records the closure once and its size on every deployment, each report in two parts', async () => {
    const closures = new ClosureRepository(database.db);
    const report = async (deploymentId: number) => {
      await closures.recordPart({
        workspaceId,
        deploymentId,
        root,
        paths: [{ path: dep, narSize: 1000, references: [] }],
        final: false,
        now: 2,
      });
      return await closures.recordPart({
        workspaceId,
        deploymentId,
        root,
        paths: [{ path: root, narSize: 234, references: [root, dep] }],
        final: true,
        now: 2,
      });
    };
    const sizes = await Promise.all(deployments.map(report));
    // Exactly one report completed the closure (and says its size); the others found it complete.
    const told = sizes.filter((s) => s !== undefined);
    assert.deepEqual(told, [{ paths: 2, narSize: 1234 }]);
    const rows = await database.db
      .selectFrom('deployments')
      .select(['closure_nar_size', 'closure_id'])
      .execute();
    assert.equal(rows.length, agents);
    assert.deepEqual(new Set(rows.map((r) => Number(r.closure_nar_size))), new Set([1234]));
    // Stored once, each agent's deployment pointing at it as its own report.
    const closureRows = await database.db
      .selectFrom('closures')
      .select(['id', 'complete', 'path_count'])
      .execute();
    assert.deepEqual(
      closureRows.map(({ complete, path_count }) => ({ complete, path_count })),
      [{ complete: 1, path_count: 2 }],
    );
    assert.deepEqual(new Set(rows.map((r) => r.closure_id)), new Set([closureRows[0]!.id]));
    const paths = await database.db.selectFrom('closure_paths').select('path').execute();
    assert.equal(paths.length, 2);
  });

  it('stores a report of the same closure sent whole by a new fleet once more, sharing it', async () => {
    const closures = new ClosureRepository(database.db);
    const fleet: number[] = [];
    for (let i = 0; i < agents; i++) {
      const agentId = await insertAgent(database.db, workspaceId, `b${i}`);
      fleet.push(
        await insertDeployment(database.db, {
          rolloutId,
          workspaceId,
          agentId,
          storePath: root,
          state: 'running',
        }),
      );
    }
    // In one message each, listed in another order than the first fleet's.
    const sizes = await Promise.all(
      fleet.map((deploymentId) =>
        closures.recordPart({
          workspaceId,
          deploymentId,
          root,
          paths: [
            { path: root, narSize: 234, references: [dep, root] },
            { path: dep, narSize: 1000, references: [] },
          ],
          final: true,
          now: 3,
        }),
      ),
    );
    assert.deepEqual(
      sizes.filter((s) => s !== undefined),
      [],
    );
    const rows = await database.db
      .selectFrom('deployments')
      .select(['closure_nar_size', 'closure_id'])
      .where('id', 'in', fleet)
      .execute();
    const [only] = await database.db.selectFrom('closures').select('id').execute();
    assert.deepEqual(
      rows.map((r) => [r.closure_id, Number(r.closure_nar_size)]),
      fleet.map(() => [only!.id, 1234]),
    );
    const count = await database.db
      .selectFrom('closures')
      .select((eb) => eb.fn.countAll<number | string>().as('n'))
      .executeTakeFirstOrThrow();
    assert.equal(Number(count.n), 1);
  });

  it('drops a part that would take a reported closure past its bound, and keeps the rest of the report', async () => {
    const closures = new ClosureRepository(database.db);
    const big = '/nix/store/55555555555555555555555555555555-big';
    const small = '/nix/store/66666666666666666666666666666666-small';
    const agentId = await insertAgent(database.db, workspaceId, 'flooder');
    const deploymentId = await insertDeployment(database.db, {
      rolloutId,
      workspaceId,
      agentId,
      storePath: big,
      state: 'running',
    });
    const report = (paths: Array<{ path: string; narSize: number; references: string[] }>, final: boolean) =>
      closures.recordPart({ workspaceId, deploymentId, root: big, paths, final, now: 3 });
    await report([{ path: small, narSize: 7, references: [] }], false);
    // One part more than the bound allows: nothing of it is stored.
    const flood = Array.from({ length: MAX_REPORTED_CLOSURE_PATHS }, (_, i) => ({
      path: `/nix/store/${String(i).padStart(32, '7')}-flood`,
      narSize: 1,
      references: [],
    }));
    await report(flood, false);
    const size = await report([{ path: big, narSize: 10, references: [small] }], true);
    assert.deepEqual(size, { paths: 2, narSize: 17 });
    const flooded = await database.db
      .selectFrom('closure_paths')
      .select((eb) => eb.fn.countAll<number | string>().as('n'))
      .where('path', 'like', '%-flood')
      .executeTakeFirstOrThrow();
    assert.equal(Number(flooded.n), 0);
  });
});

/**
 * A database whose closures were recorded before migration 017, one per workspace and root as
 * migration 004 made them: the complete ones are kept, attributed to the deployments that took
 * their size from them, and shared by identical reports made since.
 */
describe('closures recorded before they were kept per report', () => {
  let testDb: TestDatabase;
  let database: OpenDatabase;
  const root = '/nix/store/88888888888888888888888888888888-system';
  const dep = '/nix/store/99999999999999999999999999999999-dep';
  const cut = '/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-cut-short';
  const ids = { workspace: 0, rollout: 0, sized: 0, unsized: 0, sizedAgent: 0 };
  before(async () => {
    testDb = await createTestDatabase();
    database = openDatabase(testDb.config);
    const db = database.db;
    // Every migration before 017, as an older Cairn left them.
    await legacyMigrate(db as never, database.dialect, { now: () => 1, upTo: 16 });
    ids.workspace = await insertWorkspace(db);
    ids.rollout = await insertRollout(db, ids.workspace);
    ids.sizedAgent = await insertAgent(db, ids.workspace, 'old');
    const deployment = (agentId: number, storePath: string) =>
      insertDeployment(db, { rolloutId: ids.rollout, workspaceId: ids.workspace, agentId, storePath });
    ids.sized = await deployment(ids.sizedAgent, root);
    ids.unsized = await deployment(await insertAgent(db, ids.workspace, 'new'), root);
    await sql`insert into closure_paths (path, nar_size, refs) values
      (${root}, 234, ${'88888888888888888888888888888888-system 99999999999999999999999999999999-dep'}),
      (${dep}, 1000, ''), (${cut}, 5, '')`.execute(db);
    await sql`insert into closures (workspace_id, root, complete, path_count, nar_size, created_at) values
      (${ids.workspace}, ${root}, 1, 2, 1234, 1), (${ids.workspace}, ${cut}, 0, null, null, 1)`.execute(db);
    await sql`insert into closure_members (closure_id, path_id)
      select c.id, p.id from closures c join closure_paths p on (c.root = ${root} and p.path in (${root}, ${dep}))
        or (c.root = ${cut} and p.path = ${cut})`.execute(db);
    await sql`update deployments set closure_nar_size = 1234 where id = ${ids.sized}`.execute(db);
    // Migration 017 runs on what an older Cairn recorded, then every later one, in order.
    const applied = await migrate(db as never, database.dialect);
    assert.equal(applied[0], 17);
    assert.deepEqual(
      applied,
      applied.map((_, i) => 17 + i),
    );
  });
  after(async () => {
    await database?.db.destroy();
    await testDb?.drop();
  });

  it('keeps a complete closure for the deployment that took its size, and drops one cut short', async () => {
    const closures = new ClosureRepository(database.db);
    const kept = await closures.reportedClosure(ids.workspace, ids.sizedAgent, root);
    assert.deepEqual(kept && Object.fromEntries(kept), {
      [root]: { narSize: 234, references: [root, dep] },
      [dep]: { narSize: 1000, references: [] },
    });
    const rows = await database.db
      .selectFrom('deployments')
      .select(['id', 'closure_id', 'closure_nar_size'])
      .orderBy('id')
      .execute();
    const all = await database.db.selectFrom('closures').select(['id', 'root', 'complete']).execute();
    // The report cut short is gone: there is no way left to finish it.
    assert.equal(all.length, 1);
    const [closure] = all;
    assert.deepEqual(
      rows.map((r) => [r.id, r.closure_id, r.closure_nar_size === null ? null : Number(r.closure_nar_size)]),
      [
        [ids.sized, closure!.id, 1234],
        [ids.unsized, null, null],
      ],
    );
    assert.deepEqual({ root: closure!.root, complete: closure!.complete }, { root, complete: 1 });
  });

  it('shares the kept closure with an identical report made since, and records new ones beside it', async () => {
    const closures = new ClosureRepository(database.db);
    const size = await closures.recordPart({
      workspaceId: ids.workspace,
      deploymentId: ids.unsized,
      root,
      paths: [
        { path: dep, narSize: 1000, references: [] },
        { path: root, narSize: 234, references: [dep, root] },
      ],
      final: true,
      now: 2,
    });
    assert.equal(size, undefined);
    const [closure] = await database.db.selectFrom('closures').select('id').execute();
    const unsized = await database.db
      .selectFrom('deployments')
      .select(['closure_id', 'closure_nar_size'])
      .where('id', '=', ids.unsized)
      .executeTakeFirstOrThrow();
    assert.deepEqual([unsized.closure_id, Number(unsized.closure_nar_size)], [closure!.id, 1234]);
    // New rows after the copied ones (PostgreSQL's identity columns go on past them).
    const other = '/nix/store/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-other';
    const deploymentId = await insertDeployment(database.db, {
      rolloutId: ids.rollout,
      workspaceId: ids.workspace,
      agentId: ids.sizedAgent,
      storePath: other,
      state: 'running',
    });
    assert.deepEqual(
      await closures.recordPart({
        workspaceId: ids.workspace,
        deploymentId,
        root: other,
        paths: [
          { path: other, narSize: 7, references: [dep] },
          { path: dep, narSize: 1000, references: [] },
        ],
        final: true,
        now: 3,
      }),
      { paths: 2, narSize: 1007 },
    );
  });
});
