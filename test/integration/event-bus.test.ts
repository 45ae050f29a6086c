import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { Kysely } from 'kysely';
import pg from 'pg';
import pino from 'pino';
import type { Database } from '../../src/server/db/database-schema.ts';
import { DeploymentRepository } from '../../src/server/db/deployment-repository.ts';
import { migrate } from '../../src/server/db/migrations.ts';
import { type OpenDatabase, openDatabase } from '../../src/server/db/open-database.ts';
import { type BusEvents, type EventBus, LocalEventBus } from '../../src/server/events/event-bus.ts';
import { type FollowItem, followDeployments } from '../../src/server/events/follow-deployments.ts';
import {
  DESIRED_LIST_MAX,
  EVENT_CHANNEL,
  MAX_NOTIFY_BYTES,
} from '../../src/server/events/outgoing-doorbells.ts';
import { PostgresEventBus } from '../../src/server/events/postgres-event-bus.ts';
import { createTestDatabase, type TestDatabase, testPostgresUrl } from '../helpers/server.ts';

const log = pino({ level: process.env.CAIRN_TEST_LOG ?? 'silent' });
const pgUrl = testPostgresUrl();

/** Resolves once `check` holds, polling; fails after `ms`. */
async function eventually(check: () => boolean, what: string, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Records every event of every type a bus delivers. */
function record(bus: EventBus): { events: Array<[string, unknown]>; of: (t: keyof BusEvents) => unknown[] } {
  const events: Array<[string, unknown]> = [];
  const types: Array<keyof BusEvents> = [
    'deployment',
    'log',
    'desired',
    'rollout',
    'agent-online',
    'agent-connected',
    'token-revoked',
    'plan-asked',
    'plan-answered',
    'resync',
  ];
  for (const t of types) bus.subscribe(t, (e) => events.push([t, e]));
  return { events, of: (t) => events.filter(([k]) => k === t).map(([, e]) => e) };
}

/** A workspace, an agent, a rollout and a deployment, for events that name real rows. */
async function seed(db: Kysely<Database>) {
  const now = Date.now();
  const ws = await db
    .insertInto('workspaces')
    .values({ name: `w${now}${Math.random().toString(36).slice(2, 6)}`, created_at: now })
    .returning('id')
    .executeTakeFirstOrThrow();
  const agent = await db
    .insertInto('agents')
    .values({ workspace_id: ws.id, name: 'web-1', token_id: 't', created_at: now, online: 0 })
    .returning('id')
    .executeTakeFirstOrThrow();
  const rollout = await db
    .insertInto('rollouts')
    .values({ workspace_id: ws.id, created_at: now, created_by: 'test' })
    .returning('id')
    .executeTakeFirstOrThrow();
  const deployment = await db
    .insertInto('deployments')
    .values({
      rollout_id: rollout.id,
      workspace_id: ws.id,
      agent_id: agent.id,
      store_path: `/nix/store/${'a'.repeat(32)}-x`,
      exit4: 'fail',
      state: 'failed',
      step: 'switch',
      reason: 'exit 1',
      created_at: now,
    })
    .returning('id')
    .executeTakeFirstOrThrow();
  await db
    .insertInto('deployment_logs')
    .values([1, 2].map((seq) => ({ deployment_id: deployment.id, seq, t: now, text: `line ${seq}` })))
    .execute();
  return { workspaceId: ws.id, agentId: agent.id, rolloutId: rollout.id, deploymentId: deployment.id };
}

for (const kind of ['local', 'postgres'] as const) {
  describe(`the ${kind} event bus`, {
    skip: kind === 'postgres' && !pgUrl && 'CAIRN_TEST_DATABASE_URL unset',
  }, () => {
    let testDb: TestDatabase | undefined;
    let database: OpenDatabase | undefined;
    const buses: PostgresEventBus[] = [];
    const newBus = async (o: { backstopMs?: number } = {}): Promise<EventBus> => {
      if (kind === 'local') return new LocalEventBus();
      const bus = new PostgresEventBus({
        url: (testDb!.config as { url: string }).url,
        db: database!.db,
        log,
        backstopMs: o.backstopMs ?? 600_000,
        reconnectMs: { min: 50, max: 500 },
      });
      await bus.start();
      buses.push(bus);
      return bus;
    };
    before(async () => {
      if (kind === 'local') return;
      testDb = await createTestDatabase();
      database = openDatabase(testDb.config);
      await migrate(database.db as never, database.dialect);
    });
    after(async () => {
      for (const b of buses) await b.close();
      await database?.db.destroy();
      await testDb?.drop();
    });

    it('delivers every event type to each subscriber once, and nothing after it unsubscribes', async () => {
      const bus = await newBus();
      const rec = record(bus);
      const events: { [K in keyof BusEvents]?: BusEvents[K] } = {
        deployment: {
          workspaceId: 1,
          rolloutId: 2,
          deploymentId: 3,
          agent: 'web-1',
          state: 'running',
          step: 'switch',
          reason: null,
        },
        log: { rolloutId: 2, deploymentId: 3, agent: 'web-1', lines: [{ seq: 1, t: 5, text: 'hi' }] },
        desired: { agentId: 7, deployment: null },
        rollout: { workspaceId: 1, rolloutId: 2 },
        'agent-online': { agentId: 7 },
        'agent-connected': { agentId: 7, epoch: 3 },
        'token-revoked': { tokenId: 'tok-1' },
        'plan-asked': { requestId: '0123456789abcdef', agentId: 7 },
        'plan-answered': { requestId: '0123456789abcdef' },
      };
      for (const [type, e] of Object.entries(events)) bus.publish(type as 'log', e as BusEvents['log']);
      // A replica's own notifications come back to it: they must not be delivered twice.
      if (bus instanceof PostgresEventBus) await bus.flush();
      await sleep(200);
      assert.deepEqual(
        rec.events.filter(([t]) => t !== 'resync'),
        Object.entries(events),
      );
      const seen: unknown[] = [];
      const unsubscribe = bus.subscribe('rollout', (e) => seen.push(e));
      bus.publish('rollout', { workspaceId: 1, rolloutId: 9 });
      unsubscribe();
      bus.publish('rollout', { workspaceId: 1, rolloutId: 10 });
      assert.deepEqual(seen, [{ workspaceId: 1, rolloutId: 9 }]);
    });

    if (kind !== 'postgres') return;

    it('two replicas see each other’s events once, as doorbells; agent-online stays local', async () => {
      const ids = await seed(database!.db);
      const a = await newBus();
      const b = await newBus();
      const recA = record(a);
      const recB = record(b);
      const row = await database!.db.selectFrom('deployments').selectAll().executeTakeFirstOrThrow();
      a.publish('desired', { agentId: ids.agentId, deployment: row });
      a.publish('deployment', {
        workspaceId: ids.workspaceId,
        rolloutId: ids.rolloutId,
        deploymentId: ids.deploymentId,
        agent: 'web-1',
        state: 'failed',
        step: 'switch',
        reason: 'exit 1',
      });
      a.publish('log', {
        rolloutId: ids.rolloutId,
        deploymentId: ids.deploymentId,
        agent: 'web-1',
        lines: [{ seq: 2, t: 1, text: 'line 2' }],
      });
      a.publish('rollout', { workspaceId: ids.workspaceId, rolloutId: ids.rolloutId });
      a.publish('token-revoked', { tokenId: 'tok-9' });
      a.publish('agent-online', { agentId: ids.agentId });
      a.publish('agent-connected', { agentId: ids.agentId, epoch: 4 });
      a.publish('plan-asked', { requestId: 'fedcba9876543210', agentId: ids.agentId });
      a.publish('plan-answered', { requestId: 'fedcba9876543210' });
      await eventually(() => recB.of('deployment').length === 1, 'the deployment on B');
      await sleep(300);
      // On B: the row's id only (B looks it up), the deployment read from the database, the
      // log as a doorbell without lines.
      assert.deepEqual(recB.of('desired'), [{ agentId: ids.agentId }]);
      assert.deepEqual(recB.of('deployment'), [
        {
          workspaceId: ids.workspaceId,
          rolloutId: ids.rolloutId,
          deploymentId: ids.deploymentId,
          agent: 'web-1',
          state: 'failed',
          step: 'switch',
          reason: 'exit 1',
        },
      ]);
      assert.deepEqual(recB.of('log'), [
        { rolloutId: ids.rolloutId, deploymentId: ids.deploymentId, agent: '', lines: [] },
      ]);
      assert.deepEqual(recB.of('rollout'), [{ workspaceId: ids.workspaceId, rolloutId: ids.rolloutId }]);
      assert.deepEqual(recB.of('token-revoked'), [{ tokenId: 'tok-9' }]);
      assert.deepEqual(recB.of('agent-online'), []);
      assert.deepEqual(recB.of('agent-connected'), [{ agentId: ids.agentId, epoch: 4 }]);
      assert.deepEqual(recB.of('plan-asked'), [{ requestId: 'fedcba9876543210', agentId: ids.agentId }]);
      assert.deepEqual(recB.of('plan-answered'), [{ requestId: 'fedcba9876543210' }]);
      // A saw each of its own once, and B's bus rang nothing back.
      for (const t of [
        'desired',
        'deployment',
        'log',
        'rollout',
        'token-revoked',
        'agent-online',
        'agent-connected',
        'plan-asked',
        'plan-answered',
      ] as const)
        assert.equal(recA.of(t).length, 1, t);
      assert.equal(recA.of('resync').length, 0);
      assert.equal(recB.of('resync').length, 0);
    });

    it('a 10,000-agent fan-out is one small notification; each replica re-syncs what it holds', async () => {
      const a = (await newBus()) as PostgresEventBus;
      const b = await newBus();
      const recB = record(b);
      const spy = new pg.Client({ connectionString: (testDb!.config as { url: string }).url });
      await spy.connect();
      const payloads: string[] = [];
      spy.on('notification', (n) => payloads.push(n.payload ?? ''));
      await spy.query(`LISTEN ${EVENT_CHANNEL}`);
      try {
        for (let id = 1; id <= 10_000; id++) a.publish('desired', { agentId: id, deployment: null });
        await a.flush();
        await eventually(() => recB.of('resync').length === 1, 'the fan-out resync on B');
        // The spy is another listener: PostgreSQL tells it on its own connection, maybe later.
        await eventually(() => payloads.length > 0, 'the fan-out notification at the spy');
        assert.equal(payloads.length, 1);
        assert.ok(payloads[0]!.length < 100, payloads[0]);
        assert.deepEqual(recB.of('resync'), [{ reason: 'fan-out' }]);
        assert.deepEqual(recB.of('desired'), []);
        // A few agents are named one by one.
        payloads.length = 0;
        for (let id = 1; id <= DESIRED_LIST_MAX; id++) a.publish('desired', { agentId: id });
        await a.flush();
        await eventually(() => recB.of('desired').length === DESIRED_LIST_MAX, 'the named agents on B');
        await eventually(() => payloads.length > 0, 'the named agents’ notification at the spy');
        assert.equal(payloads.length, 1);
        // Thousands of deployments changing at once: a few notifications, each under the limit.
        payloads.length = 0;
        for (let id = 1; id <= 10_000; id++)
          a.publish('deployment', {
            workspaceId: 1,
            rolloutId: 1,
            deploymentId: id,
            agent: 'x',
            state: 'cancelled',
            step: null,
            reason: 'superseded',
          });
        await a.flush();
        await eventually(() => payloads.length > 0, 'the deployment doorbells');
        await sleep(200);
        assert.ok(payloads.length <= 15, `${payloads.length} notifications`);
        const named = new Set<number>();
        for (const p of payloads) {
          assert.ok(Buffer.byteLength(p) <= MAX_NOTIFY_BYTES, `${Buffer.byteLength(p)} bytes`);
          for (const id of (JSON.parse(p) as { d: number[] }).d) named.add(id);
        }
        assert.equal(named.size, 10_000);
      } finally {
        await spy.end();
      }
    });

    it('ignores notifications that are not its own kind', async () => {
      const b = await newBus();
      const recB = record(b);
      const raw = new pg.Client({ connectionString: (testDb!.config as { url: string }).url });
      await raw.connect();
      try {
        for (const junk of [
          'not json',
          '{"r":"x","a":["1"]}',
          '{"a":[1]}',
          '[1,2]',
          '{"r":"x","d":[-1]}',
          '{"r":"x","c":[[1,"2"]]}',
          '{"r":"x","c":[1]}',
        ])
          await raw.query('select pg_notify($1, $2)', [EVENT_CHANNEL, junk]);
        await raw.query('select pg_notify($1, $2)', [EVENT_CHANNEL, '{"r":"x","o":[[1,2]]}']);
        await eventually(() => recB.of('rollout').length === 1, 'the good notification');
        assert.deepEqual(
          recB.events.filter(([t]) => t !== 'resync'),
          [['rollout', { workspaceId: 1, rolloutId: 2 }]],
        );
      } finally {
        await raw.end();
      }
    });

    it('reconnects when its listener is killed, says resync, and hears the other replica again', async () => {
      const a = await newBus();
      const b = await newBus();
      const recB = record(b);
      const admin = new pg.Client({ connectionString: (testDb!.config as { url: string }).url });
      await admin.connect();
      try {
        const killed = await admin.query(
          `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
           WHERE query LIKE 'LISTEN%' AND datname = current_database() AND pid <> pg_backend_pid()`,
        );
        assert.ok(killed.rowCount! >= 2, `${killed.rowCount} listeners killed`);
      } finally {
        await admin.end();
      }
      await eventually(() => recB.of('resync').length >= 1, 'the resync after the reconnect');
      assert.deepEqual(recB.of('resync')[0], { reason: 'connected' });
      a.publish('token-revoked', { tokenId: 'after-kill' });
      await eventually(() => recB.of('token-revoked').length === 1, 'an event after the reconnect');
    });

    it('a follower on another replica shows lines and states it only heard of, and re-reads states on resync', async () => {
      const ids = await seed(database!.db);
      await database!.db
        .updateTable('deployments')
        .set({ state: 'running', step: 'build' })
        .where('id', '=', ids.deploymentId)
        .execute();
      const a = await newBus();
      const b = await newBus();
      const deployments = new DeploymentRepository(database!.db);
      const abort = new AbortController();
      const items: FollowItem[] = [];
      const following = (async () => {
        for await (const item of followDeployments(
          { bus: b, deployments, flushLogs: async () => {} },
          {
            concerns: (e) => e.deploymentId === ids.deploymentId,
            load: () => deployments.byIds([ids.deploymentId]),
            signal: abort.signal,
          },
        ))
          items.push(item);
      })();
      try {
        // The replay: the running state and the two lines already written.
        await eventually(() => items.length === 2, 'the replay');
        // A third line, written and rung on A: B's follower reads it from the database.
        await database!.db
          .insertInto('deployment_logs')
          .values({ deployment_id: ids.deploymentId, seq: 3, t: 1, text: 'line 3' })
          .execute();
        a.publish('log', {
          rolloutId: ids.rolloutId,
          deploymentId: ids.deploymentId,
          agent: 'web-1',
          lines: [{ seq: 3, t: 1, text: 'line 3' }],
        });
        await eventually(() => items.length === 3, 'the line rung from A');
        assert.deepEqual(items[2], {
          kind: 'log',
          deploymentId: ids.deploymentId,
          agent: 'web-1',
          lines: [{ seq: 3, t: 1, text: 'line 3' }],
        });
        // The deployment fails and nobody rings (a lost notification): the resync shows it, and
        // following ends, as the deployment is final.
        await database!.db
          .updateTable('deployments')
          .set({ state: 'failed', step: 'switch', reason: 'exit 1' })
          .where('id', '=', ids.deploymentId)
          .execute();
        b.publish('resync', { reason: 'backstop' });
        let done = false;
        void following.then(() => {
          done = true;
        });
        await eventually(() => done, 'following to end at the final state');
        assert.deepEqual(items.at(-1), {
          kind: 'state',
          state: {
            deploymentId: ids.deploymentId,
            agent: 'web-1',
            state: 'failed',
            step: 'switch',
            reason: 'exit 1',
          },
        });
      } finally {
        abort.abort();
      }
    });

    it('says resync on the backstop timer', async () => {
      const bus = await newBus({ backstopMs: 100 });
      const rec = record(bus);
      await eventually(() => rec.of('resync').length >= 2, 'two backstop resyncs');
      assert.deepEqual(rec.of('resync')[0], { reason: 'backstop' });
    });
  });
}
