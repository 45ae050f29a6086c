/**
 * What webhooks cost the agents' writes, and how fast the outbox empties. On a fresh database
 * (SQLite in a temporary directory, or PostgreSQL when CAIRN_TEST_DATABASE_URL names a server),
 * N deployments of N agents are started (each one's first step, grouped by the write batch as
 * handle-progress does) and finished (each verdict in the batch, as finish-deployment does):
 * with the writes as they were before webhooks (the baseline), with the outbox statements and no
 * webhook endpoint, and with an endpoint subscribed to `deployment.started` and
 * `deployment.succeeded`, which makes both writes insert outbox rows in their transactions.
 * Then the dispatcher sends those 2N deliveries, signed, to a receiver on 127.0.0.1 that answers
 * 204 at once. Each scenario runs `--runs` times on new deployments; the median counts.
 * Usage: node --import tsx bench/webhooks.ts [--agents 2000] [--runs 3]
 * The last line is a JSON object with the figures.
 */
import { once } from 'node:events';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { parseArgs } from 'node:util';
import type { Kysely } from 'kysely';
import pino from 'pino';
import type { Database } from '../src/server/db/database-schema.ts';
import {
  DeploymentRepository,
  FINISH_WRITES,
  type FinishWrite,
  STEP_WRITES,
  type StepWrite,
} from '../src/server/db/deployment-repository.ts';
import { migrate } from '../src/server/db/migrations.ts';
import { openDatabase } from '../src/server/db/open-database.ts';
import { WebhookRepository } from '../src/server/db/webhook-repository.ts';
import { WriteBatch, type WriteGroup } from '../src/server/db/write-batch.ts';
import { LocalEventBus } from '../src/server/events/event-bus.ts';
import { generateWebhookSecret } from '../src/server/webhooks/sign-webhook.ts';
import { WebhookDispatcher } from '../src/server/webhooks/webhook-dispatcher.ts';
import { createTestDatabase } from '../test/helpers/server.ts';

const { values } = parseArgs({
  options: { agents: { type: 'string', default: '2000' }, runs: { type: 'string', default: '3' } },
});
const N = Number(values.agents);
const RUNS = Number(values.runs);
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

const testDb = await createTestDatabase();
const database = openDatabase(testDb.config);
const db = database.db as Kysely<Database>;
await migrate(database.db as never, database.dialect);
const ws = (
  await db
    .insertInto('workspaces')
    .values({ name: 'default', created_at: 1 })
    .returning('id')
    .executeTakeFirstOrThrow()
).id;
const agents: Array<{ id: number; name: string }> = [];
for (let i = 0; i < N; i += 500) {
  const rows = await db
    .insertInto('agents')
    .values(
      Array.from({ length: Math.min(500, N - i) }, (_, j) => ({
        workspace_id: ws,
        name: `a${i + j}`,
        token_id: `t${i + j}`,
        created_at: 1,
        online: 1,
      })),
    )
    .returning(['id', 'name'])
    .execute();
  agents.push(...rows);
}

/** A rollout of one pending deployment per agent; their ids, in agent order. */
async function newDeployments(): Promise<{ rolloutId: number; ids: number[] }> {
  const { rolloutId, created } = await new DeploymentRepository(db).createRollout({
    workspaceId: ws,
    createdBy: 'bench',
    now: Date.now(),
    deployments: agents.map((a) => ({
      agentId: a.id,
      storePath: '/nix/store/00000000000000000000000000000000-bench',
      rollbackScript: null,
      exit4: 'fail',
      healthChecks: null,
      confirmTimeout: 60,
      kind: 'deploy' as const,
    })),
  });
  return { rolloutId, ids: created.map((d) => d.id) };
}

/**
 * The steps as they were before webhooks: one grouped UPDATE, no outbox statement.
 */
const BASELINE_STEPS: WriteGroup<StepWrite, boolean> = {
  runMany: (w, items) => new DeploymentRepository(w).startMany(items),
  keysOf: (s) => [`deployment:${s.id}`],
};

/**
 * Starts and finishes N deployments through the write batch, as the server does (`outbox`) or as
 * it did before webhooks (`baseline`); the two phases' times in ms.
 */
async function startAndFinish(mode: 'baseline' | 'outbox'): Promise<{ startMs: number; finishMs: number }> {
  const { rolloutId, ids } = await newDeployments();
  const batch = new WriteBatch(db);
  let t = performance.now();
  await Promise.all(
    ids.map((id, i) =>
      batch.writeGrouped(mode === 'outbox' ? STEP_WRITES : BASELINE_STEPS, {
        id,
        agentId: agents[i]!.id,
        step: 'download',
        at: Date.now(),
        workspaceId: ws,
        rolloutId,
        agent: agents[i]!.name,
      }),
    ),
  );
  const startMs = performance.now() - t;
  t = performance.now();
  // The verdicts as before webhooks: one grouped UPDATE, no outbox statement.
  const baselineVerdicts: WriteGroup<FinishWrite, boolean> = {
    runMany: (w, items) => new DeploymentRepository(w).finishMany(items),
    keysOf: (f) => [`deployment:${f.id}`],
  };

  await Promise.all(
    ids.map((id, i) => {
      const v: FinishWrite = {
        id,
        agentId: agents[i]!.id,
        result: { state: 'succeeded', step: null, reason: null, rebootRequired: false },
        at: Date.now(),
        workspaceId: ws,
        rolloutId,
        agent: agents[i]!.name,
      };
      return batch.writeGrouped(mode === 'outbox' ? FINISH_WRITES : baselineVerdicts, v);
    }),
  );
  return { startMs, finishMs: performance.now() - t };
}

const receiver = createServer((req, res) => {
  req.resume();
  req.on('end', () => res.writeHead(204).end());
});
receiver.listen(0, '127.0.0.1');
await once(receiver, 'listening');
const url = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/hook`;

const figures: Record<string, number> = {};
const baseline: Array<{ startMs: number; finishMs: number }> = [];
for (let r = 0; r < RUNS; r++) baseline.push(await startAndFinish('baseline'));
figures.startMsBaseline = median(baseline.map((x) => x.startMs));
figures.finishMsBaseline = median(baseline.map((x) => x.finishMs));
const without: Array<{ startMs: number; finishMs: number }> = [];
for (let r = 0; r < RUNS; r++) without.push(await startAndFinish('outbox'));
figures.startMsWithout = median(without.map((x) => x.startMs));
figures.finishMsWithout = median(without.map((x) => x.finishMs));

await new WebhookRepository(db).create({
  workspaceId: ws,
  url,
  events: ['deployment.started', 'deployment.succeeded'],
  secret: generateWebhookSecret(),
  createdAt: Date.now(),
  createdBy: 'bench',
});
const withHook: Array<{ startMs: number; finishMs: number }> = [];
const deliverMs: number[] = [];
for (let r = 0; r < RUNS; r++) {
  withHook.push(await startAndFinish('outbox'));
  const pending = async () =>
    Number(
      (
        await db
          .selectFrom('webhook_deliveries')
          .select((eb) => eb.fn.countAll().as('n'))
          .where('state', '=', 'pending')
          .executeTakeFirstOrThrow()
      ).n,
    );
  if ((await pending()) !== 2 * N)
    throw new Error(`expected ${2 * N} pending deliveries, found ${await pending()}`);
  const dispatcher = new WebhookDispatcher({
    db,
    dialect: database.dialect,
    bus: new LocalEventBus(),
    log: pino({ level: 'silent' }),
    now: Date.now,
    settings: {
      allowPrivate: true,
      retryScheduleMs: [1000],
      timeoutMs: 15_000,
      pollMs: 1000,
      agentOfflineGraceMs: 3_600_000,
      retentionMs: 86_400_000,
    },
    baseUrl: () => 'http://127.0.0.1:8080',
  });
  const t = performance.now();
  await dispatcher.start();
  while ((await pending()) > 0) await new Promise((res) => setTimeout(res, 20));
  deliverMs.push(performance.now() - t);
  await dispatcher.close();
}
figures.startMsWith = median(withHook.map((x) => x.startMs));
figures.finishMsWith = median(withHook.map((x) => x.finishMs));
figures.deliverMs = median(deliverMs);
figures.deliveriesPerSecond = Math.round((2 * N) / (figures.deliverMs / 1000));

const ms = (x: number) => `${x.toFixed(0)} ms`;
console.log(`database: ${database.dialect}; ${N} agents; median of ${RUNS} runs`);
console.log(
  `first steps of ${N} deployments (write batch): ${ms(figures.startMsBaseline)} as before webhooks, ${ms(figures.startMsWithout)} with the outbox and no endpoint, ${ms(figures.startMsWith)} with an endpoint`,
);
console.log(
  `verdicts of ${N} deployments (write batch): ${ms(figures.finishMsBaseline)} as before webhooks, ${ms(figures.finishMsWithout)} with the outbox and no endpoint, ${ms(figures.finishMsWith)} with an endpoint`,
);
console.log(
  `sending ${2 * N} signed deliveries to 127.0.0.1: ${ms(figures.deliverMs)} (${figures.deliveriesPerSecond}/s)`,
);
console.log(JSON.stringify({ database: database.dialect, agents: N, runs: RUNS, ...figures }));

receiver.close();
await db.destroy();
await testDb.drop();
