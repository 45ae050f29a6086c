import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { type AgentProcess, startAgent } from '../helpers/agent-process.ts';
import { nixosPackage, profileTarget } from '../helpers/deploy-fixtures.ts';
import { buildPackages, deleteFromStore, RUN_TAG } from '../helpers/nix.ts';
import { cli, createTestDatabase } from '../helpers/server.ts';
import { freePort, type ServerProcess, spawnServer } from '../helpers/server-process.ts';
import { getRollout, type StagedView, sleep } from '../helpers/staged-rollout.ts';

const BAKE_MS = 3000;

describe('a staged rollout across a server crash', () => {
  const cleanup: Array<() => Promise<unknown>> = [];
  after(async () => {
    for (const c of cleanup.reverse()) await c().catch(() => {});
  });

  // SIGKILL: a crash. SIGTERM: a clean stop, which tells the agents to go away and come back.
  for (const signal of ['SIGKILL', 'SIGTERM'] as const)
    it(`carries on after ${signal} and a restart: batches in order, each agent switched once, succeeded`, async () => {
      // Names of their own: the other case's agents still hold theirs until the suite ends.
      const NAMES = ['1', '2', '3', '4', '5', '6'].map((n) => `${signal === 'SIGKILL' ? 'k' : 't'}${n}`);
      const dataDir = await mkdtemp(join(tmpdir(), 'cairn-rollout-restart-'));
      cleanup.push(() => rm(dataDir, { recursive: true, force: true }));
      const port = await freePort();
      // The database the suite runs on (SQLite in the data dir, or PostgreSQL), kept across the crash.
      const db = await createTestDatabase();
      cleanup.push(() => db.drop());
      const database = db.config.kind === 'sqlite' ? `sqlite:${db.config.file}` : db.config.url;
      let server: ServerProcess = await spawnServer({ port, dataDir, database });
      cleanup.push(() => server.kill('SIGKILL'));
      const adminToken = (await readFile(join(dataDir, 'admin-token'), 'utf8')).trim();
      const api = { url: server.url, adminToken };
      const env = { CAIRN_SERVER: server.url, CAIRN_TOKEN: adminToken };
      assert.equal((await cli(['cache', 'create', 'main'], env)).code, 0);
      const agents: AgentProcess[] = [];
      for (const name of NAMES) {
        const created = await cli(['agent', 'create', name], env);
        assert.equal(created.code, 0, created.stderr);
        const a = await startAgent({
          name,
          token: created.stdout.trim(),
          server: server.url,
          profile: join(dataDir, `profile-${name}`),
        });
        cleanup.push(() => a.stop());
        await a.waitFor(/connected to/);
        agents.push(a);
      }
      const record = join(dataDir, 'record');
      const paths = await buildPackages([
        nixosPackage(`restart-v1-${RUN_TAG}`, record),
        nixosPackage(`restart-v2-${RUN_TAG}`, record),
      ]);
      const v1 = paths.get(`restart-v1-${RUN_TAG}`)!;
      const v2 = paths.get(`restart-v2-${RUN_TAG}`)!;
      assert.equal((await cli(['push', 'main', v1, v2], env)).code, 0);
      await deleteFromStore([v1, v2]);
      const activate = async (body: object, ...flags: string[]) => {
        const file = join(dataDir, `deploy-${Math.random().toString(36).slice(2)}.json`);
        await writeFile(file, JSON.stringify(body));
        return await cli(['deploy', 'activate', file, ...flags], env);
      };
      const everyone = (p: string) => Object.fromEntries(NAMES.map((n) => [n, p]));
      const first = await activate({ agents: everyone(v1) });
      assert.equal(first.code, 0, first.stdout + first.stderr);

      const started = await activate(
        { agents: everyone(v2), rollout: { batches: ['2', '4', '100%'], bake: '3s' } },
        '--async',
      );
      assert.equal(started.code, 0, started.stdout + started.stderr);
      const id = Number(started.stdout.trim());
      // Every view of the rollout seen while it runs, across the crash.
      const seen: StagedView[] = [];
      const watch = async (until: (r: StagedView) => boolean, timeoutMs: number) => {
        const deadline = Date.now() + timeoutMs;
        for (;;) {
          const r = await getRollout(api, id);
          seen.push(r);
          if (until(r)) return r;
          assert.ok(Date.now() < deadline, `rollout ${id} stuck: ${JSON.stringify(r, null, 1)}`);
          await sleep(100);
        }
      };
      // Mid-way: the second batch has just opened.
      await watch((r) => r.staged.batch >= 1, 30_000);
      await server.kill(signal);
      for (const a of agents) await a.waitFor(/reconnecting in/);
      // Down for longer than the bake: nothing moves without a server.
      await sleep(BAKE_MS + 1000);
      server = await spawnServer({ port, dataDir, database });
      const ended = await watch((r) => !['pending', 'running', 'paused'].includes(r.staged.state), 60_000);
      assert.equal(ended.staged.state, 'succeeded', JSON.stringify(ended, null, 1));
      // After a crash on PostgreSQL the agents stay marked online until the dead process's lease
      // lapses, and one not back by then is marked offline: if a batch opens meanwhile it is
      // deferred and runs, back, outside the batch, maybe after the rollout ended.
      const done = await watch(
        (r) => r.deployments.every((d) => d.state !== 'pending' && d.state !== 'running'),
        60_000,
      );

      assert.equal(done.staged.state, 'succeeded', JSON.stringify(done, null, 1));
      assert.deepEqual(
        done.deployments.map((d) => [d.agent, d.state, d.rolloutState]),
        done.deployments.map((d) => [d.agent, 'succeeded', 'succeeded']),
      );
      for (const n of NAMES) assert.equal(await profileTarget(join(dataDir, `profile-${n}`)), v2, n);
      // Each agent switched to v2 exactly once.
      const switches = (await readFile(record, 'utf8')).split('\n').filter((l) => l === `${v2} switch`);
      assert.equal(switches.length, NAMES.length, await readFile(record, 'utf8'));
      // Batches of 2, 2 and 2 agents, opened one after another and never skipped back.
      const sizes = [0, 1, 2].map((b) => done.deployments.filter((d) => d.batch === b).length);
      assert.deepEqual(sizes, [2, 2, 2]);
      const batches = seen.map((r) => r.staged.batch);
      for (let i = 1; i < batches.length; i++)
        assert.ok(batches[i]! >= batches[i - 1]!, `batch went back: ${batches}`);
      // A batch's agents started only once the one before was decided: finished, then baked.
      const ms = (s: string | null) => Date.parse(s!);
      for (const b of [1, 2]) {
        const earlier = done.deployments.filter((d) => d.batch === b - 1);
        const later = done.deployments.filter((d) => d.batch === b);
        const decidedAt = Math.max(...earlier.map((d) => ms(d.finishedAt))) + BAKE_MS;
        for (const d of later)
          assert.ok(
            ms(d.startedAt) >= decidedAt,
            `${d.agent} (batch ${b}) started before batch ${b - 1} was decided`,
          );
      }
      // Agents that were online when the server stopped count as online for a minute after it
      // starts again, while they reconnect: no batch defers them (SQLite: those online at the
      // start; PostgreSQL: those the clean stop marked offline within the minute).
      if (signal === 'SIGTERM' || db.config.kind === 'sqlite') {
        const deferred = new Set(
          seen.flatMap((r) => r.deployments.filter((d) => d.rolloutState === 'deferred').map((d) => d.agent)),
        );
        assert.deepEqual([...deferred], [], 'agents deferred while reconnecting');
      }
      // Both servers agree on the rollout's history: one deployment per agent.
      assert.deepEqual(done.deployments.map((d) => d.agent).sort(), NAMES);
    });
});
