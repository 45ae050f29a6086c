import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { sql } from 'kysely';
import { openDatabase } from '../../src/server/db/open-database.ts';
import { startAgent } from '../helpers/agent-process.ts';
import { plainPackage, profileTarget } from '../helpers/deploy-fixtures.ts';
import { buildPackages, deleteFromStore, RUN_TAG } from '../helpers/nix.ts';
import { cli, createTestDatabase, testPostgresUrl } from '../helpers/server.ts';
import { freePort, spawnServer } from '../helpers/server-process.ts';

describe('two server replicas on one PostgreSQL database', {
  skip: !testPostgresUrl() && 'CAIRN_TEST_DATABASE_URL unset',
}, () => {
  const cleanup: Array<() => Promise<unknown>> = [];
  after(async () => {
    for (const c of cleanup.reverse()) await c().catch(() => {});
  });

  it('a rollout posted to A reaches an agent on B, and following through A shows what the agent told B', async () => {
    const tmp = await mkdtemp(join(tmpdir(), 'cairn-replicas-'));
    cleanup.push(() => rm(tmp, { recursive: true, force: true }));
    const db = await createTestDatabase();
    cleanup.push(() => db.drop());
    assert.equal(db.config.kind, 'postgres');
    const database = (db.config as { url: string }).url;
    // One after the other: the first creates the workspace and the admin token.
    const a = await spawnServer({ port: await freePort(), dataDir: join(tmp, 'a'), database });
    cleanup.push(() => a.kill('SIGKILL'));
    // B re-syncs its agents every second (30 s by default), for the lost notification below.
    const b = await spawnServer({
      port: await freePort(),
      dataDir: join(tmp, 'b'),
      database,
      env: { CAIRN_EVENTS_BACKSTOP_SECONDS: '1' },
    });
    cleanup.push(() => b.kill('SIGKILL'));
    const token = (await readFile(join(tmp, 'a', 'admin-token'), 'utf8')).trim();
    const viaA = { CAIRN_SERVER: a.url, CAIRN_TOKEN: token };
    const viaB = { CAIRN_SERVER: b.url, CAIRN_TOKEN: token };
    assert.equal((await cli(['cache', 'create', 'main'], viaA)).code, 0);
    const agentToken = (await cli(['agent', 'create', 'rb'], viaA)).stdout.trim();
    const agent = await startAgent({
      name: 'rb',
      token: agentToken,
      server: b.url,
      profile: join(tmp, 'profile-rb'),
    });
    cleanup.push(() => agent.stop());
    await agent.waitFor(/connected to/);

    const names = ['one', 'two', 'three'].map((n) => `replicas-${n}-${RUN_TAG}`);
    const paths = await buildPackages(names.map((n) => plainPackage(n)));
    // Pushed through B: each replica keeps blobs on its own disk (shared storage is S3's part).
    const pushed = await cli(['push', 'main', ...paths.values()], viaB);
    assert.equal(pushed.code, 0, pushed.stderr);
    await deleteFromStore([...paths.values()]);
    const name = names[0]!;
    const path = paths.get(name)!;
    const file = join(tmp, 'deploy.json');
    await writeFile(file, JSON.stringify({ agents: { rb: path } }));

    // Planned through A, which does not hold the agent: B asks its machine, which lacks the path.
    const planned = await cli(['deploy', 'plan', file, '--json'], viaA);
    assert.equal(planned.code, 0, planned.stdout + planned.stderr);
    const [entry] = (
      JSON.parse(planned.stdout) as {
        agents: Array<{ machine: { status: string; download: { paths: Array<{ path: string }> } | null } }>;
      }
    ).agents;
    assert.equal(entry?.machine.status, 'answered', planned.stdout);
    assert.deepEqual(
      entry.machine.download?.paths.map((p) => p.path),
      [path],
    );
    // The request's row is gone once answered.
    const requests = openDatabase(db.config).db;
    const left = await requests.selectFrom('plan_requests').select('id').execute();
    await requests.destroy();
    assert.deepEqual(left, []);

    // Posted to A, which does not hold the agent; followed through A.
    const r = await cli(['deploy', 'activate', file, '--timeout', '60s'], viaA);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.match(r.stdout, new RegExp(`rb \\| activated ${name}`));
    assert.match(r.stdout, /succeeded/);
    assert.equal(await profileTarget(join(tmp, 'profile-rb')), path);
    // And A answers what the agent reported to B.
    const list = await cli(['deploy', 'list'], viaA);
    assert.match(list.stdout, /rb\s.*succeeded/);

    // The replicas' listeners killed: they reconnect, and the next rollout still arrives.
    const conn = openDatabase(db.config).db;
    cleanup.push(() => conn.destroy());
    const killed = await sql<{ pid: number }>`
      select pg_terminate_backend(pid) from pg_stat_activity
      where query like 'LISTEN%' and datname = current_database()`.execute(conn);
    assert.equal(killed.rows.length, 2);
    await writeFile(file, JSON.stringify({ agents: { rb: paths.get(names[1]!)! } }));
    const second = await cli(['deploy', 'activate', file, '--timeout', '60s'], viaA);
    assert.equal(second.code, 0, second.stdout + second.stderr + agent.lines.join('\n'));
    assert.equal(await profileTarget(join(tmp, 'profile-rb')), paths.get(names[1]!));

    // A replica that wrote a deployment and died before it could notify: B's backstop re-sync
    // tells the agent anyway.
    const now = Date.now();
    const agentRow = await conn
      .selectFrom('agents')
      .select(['id', 'workspace_id'])
      .where('name', '=', 'rb')
      .executeTakeFirstOrThrow();
    const rollout = await conn
      .insertInto('rollouts')
      .values({ workspace_id: agentRow.workspace_id, created_at: now, created_by: 'a replica that died' })
      .returning('id')
      .executeTakeFirstOrThrow();
    const third = await conn
      .insertInto('deployments')
      .values({
        rollout_id: rollout.id,
        workspace_id: agentRow.workspace_id,
        agent_id: agentRow.id,
        store_path: paths.get(names[2]!)!,
        exit4: 'fail',
        state: 'pending',
        created_at: now,
        dispatched_at: now,
      })
      .returning('id')
      .executeTakeFirstOrThrow();
    const deadline = Date.now() + 30_000;
    for (;;) {
      const { state } = await conn
        .selectFrom('deployments')
        .select('state')
        .where('id', '=', third.id)
        .executeTakeFirstOrThrow();
      if (state === 'succeeded') break;
      assert.ok(Date.now() < deadline, `the unannounced deployment is ${state}`);
      await new Promise((r) => setTimeout(r, 200));
    }
    assert.equal(await profileTarget(join(tmp, 'profile-rb')), paths.get(names[2]!));

    // The agent's token revoked through A: B closes its connection at once.
    const revoked = await cli(['agent', 'revoke', 'rb'], viaA);
    assert.equal(revoked.code, 0, revoked.stderr);
    await agent.waitFor(/the agent token was revoked/, 10_000);
  });
});
