import { mkdir } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import pino, { type Logger } from 'pino';
import { ReplicaLease } from './agents/replica-lease.ts';
import { removeLeftoverSnapshots } from './backup/write-backup.ts';
import { openBlobStore } from './blob/open-blob-store.ts';
import { bootstrap } from './bootstrap.ts';
import { startCacheCollection } from './cache/cache-collector.ts';
import { createApp } from './create-app.ts';
import { AgentRepository } from './db/agent-repository.ts';
import { migrate } from './db/migrations.ts';
import { openDatabase } from './db/open-database.ts';
import { PostgresEventBus } from './events/postgres-event-bus.ts';
import { prettyDestination } from './log-format.ts';
import { metricsListener } from './metrics/metrics-routes.ts';
import { startLogRetention } from './retention/log-retention.ts';
import { RECONNECT_GRACE_MS } from './rollouts/rollout-engine.ts';
import type { ServerConfig } from './server-config.ts';

/** Connections the kernel may hold for the server to accept. */
const LISTEN_BACKLOG = 8192;

/** A running server. */
export interface RunningServer {
  /** The URL it listens at, such as `http://127.0.0.1:43211`. */
  readonly url: string;
  readonly port: number;
  /** The URL of the metrics listener's `/metrics` (`--metrics-listen`), when there is one. */
  readonly metricsUrl: string | undefined;
  /** Every route of the JSON API and dashboard (see App.routes). */
  readonly routes: ReadonlyArray<{ method: string; path: string }>;
  /** Stops accepting, finishes requests in flight (up to a grace period) and closes the database. */
  close(): Promise<void>;
}

/**
 * Opens the database and blob store, migrates, bootstraps, and listens: the one place that
 * binds a port. Resolves once `/healthz` answers 200.
 */
export async function startServer(
  config: ServerConfig,
  options: { log?: Logger } = {},
): Promise<RunningServer> {
  const pinoOptions = { level: config.logLevel, redact: ['req.headers.authorization', 'token'] };
  const log =
    options.log ??
    (config.logFormat === 'pretty'
      ? pino(pinoOptions, prettyDestination(process.stdout))
      : pino(pinoOptions));
  await mkdir(config.dataDir, { recursive: true, mode: 0o700 });
  await removeLeftoverSnapshots(config.dataDir);
  // First, before the database is touched: a bucket that cannot be used stops the start.
  const { blobs, close: closeBlobs } = await openBlobStore(config.blobStore);
  const database = openDatabase(config.database, {
    onIdleConnectionError: (err) =>
      log.warn({ err }, 'an idle database connection failed; it will be reopened'),
  });
  const applied = await migrate(database.db as never, database.dialect);
  if (applied.length > 0) log.info({ applied }, 'database migrated');
  const tokenFile = await bootstrap(database, config.dataDir, Date.now());
  if (tokenFile)
    log.info(
      { file: tokenFile },
      'first start: created workspace "default" and an admin token; read it from this file',
    );

  // One process owns an SQLite database: no agent is connected to it before it starts. Those
  // that were connected to the server before are reconnecting; staged rollouts count on them.
  // On PostgreSQL a server that stops marks its agents offline itself (other replicas may hold
  // agents meanwhile): those that went offline within the grace are as likely reconnecting,
  // whether to this server after a restart or to a replica after their own stopped.
  const agentRows = new AgentRepository(database.db);
  const reconnecting =
    database.dialect === 'sqlite'
      ? await agentRows.setAllOffline(Date.now())
      : await agentRows.offlineSince(Date.now() - RECONNECT_GRACE_MS);
  // Replicas sharing PostgreSQL ring each other through LISTEN/NOTIFY; SQLite has one process.
  const bus =
    config.database.kind === 'postgres'
      ? new PostgresEventBus({
          url: config.database.url,
          db: database.db,
          log,
          backstopMs: config.eventsBackstopMs,
        })
      : undefined;
  try {
    await bus?.start();
  } catch (err) {
    await database.db.destroy();
    throw new Error(`Cannot listen for the other replicas' events on PostgreSQL: ${(err as Error).message}`);
  }
  let ready = false;
  let listenUrl = '';
  const app = createApp({
    webhooks: config.webhooks,
    listenUrl: () => listenUrl,
    ...(bus ? { bus } : {}),
    database,
    blobs,
    log,
    now: Date.now,
    publicUrl: config.publicUrl,
    maxNarBytes: config.maxNarBytes,
    failedAuthBurst: config.failedAuthBurst,
    trustedProxies: config.trustedProxies,
    bodyTimeoutMs: config.headersTimeoutMs,
    agentConnectLimits: config.agentConnectLimits,
    isReady: () => ready,
    reconnecting,
    ...(bus ? { replicaId: bus.replicaId } : {}),
    metricsPerAgent: config.metricsPerAgent,
    backupSource: {
      dataDir: config.dataDir,
      blobStore: config.blobStore,
      backupDatabase: database.backup,
    },
    gcUploadGraceMs: config.gcUploadGraceMs,
  });
  // Replicas: a lease says this one is alive; the agents of one whose lease expired (killed,
  // its machine lost) are marked offline by the others. SQLite's single process needs none.
  // Its own connection: a renewal waiting behind the fleet's queries in the shared pool came
  // more than 20 s late under 10,000 agents' reconnects (bench:fleet), which is how a live
  // replica loses its lease.
  const leaseDatabase =
    bus && config.database.kind === 'postgres'
      ? openDatabase(
          { ...config.database, maxConnections: 1 },
          {
            onIdleConnectionError: (err) =>
              log.warn({ err }, 'the lease’s idle database connection failed; it will be reopened'),
          },
        )
      : undefined;
  const lease =
    bus && leaseDatabase
      ? new ReplicaLease({
          db: leaseDatabase.db,
          replicaId: bus.replicaId,
          log,
          now: Date.now,
          leaseMs: config.replicaLeaseMs,
          held: () => app.hub.heldAgents(),
          onReclaimed: (ids) => {
            for (const agentId of ids) bus.publish('agent-online', { agentId });
          },
          dialect: database.dialect,
        })
      : undefined;
  try {
    await lease?.start();
  } catch (err) {
    await app.close();
    await bus?.close();
    await leaseDatabase?.db.destroy();
    await database.db.destroy();
    throw new Error(`Cannot take this replica's lease on PostgreSQL: ${(err as Error).message}`);
  }
  // Request bodies (NAR uploads) may take long, so no overall request timeout; but the headers
  // must come quickly, checked every second, so slow-header clients cannot hold sockets.
  const server: Server = createServer({
    keepAliveTimeout: config.keepAliveTimeoutMs,
    headersTimeout: config.headersTimeoutMs,
    requestTimeout: 0,
    connectionsCheckingInterval: 1000,
  });
  server.on('request', app.onRequest);
  server.on('checkContinue', app.onCheckContinue);
  server.on('upgrade', app.onUpgrade);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    // A deep accept queue: after a restart, thousands of agents connect within a second, and
    // with Node's default of 511 the kernel drops the rest (and a health check among them) for
    // a whole SYN retry. The kernel caps it at net.core.somaxconn.
    server.listen({ port: config.port, host: config.host, backlog: LISTEN_BACKLOG }, () => resolve());
  });
  const { port } = server.address() as AddressInfo;
  const host = config.host.includes(':') ? `[${config.host}]` : config.host;
  const url = `http://${host}:${port}`;
  listenUrl = url;
  // The metrics alone, without a token, on an address of their own (for a Prometheus on a
  // trusted network); a port that cannot be bound stops the start, as the main one does.
  let metricsServer: Server | undefined;
  let metricsUrl: string | undefined;
  if (config.metricsListen) {
    const listen = config.metricsListen;
    metricsServer = createServer({
      keepAliveTimeout: config.keepAliveTimeoutMs,
      headersTimeout: config.headersTimeoutMs,
    });
    metricsServer.on('request', metricsListener(app.metrics, log));
    try {
      await new Promise<void>((resolve, reject) => {
        metricsServer!.once('error', reject);
        metricsServer!.listen({ port: listen.port, host: listen.host }, () => resolve());
      });
    } catch (err) {
      server.close();
      await app.close();
      await lease?.close();
      await leaseDatabase?.db.destroy();
      await bus?.close();
      await database.db.destroy();
      closeBlobs();
      throw new Error(
        `Cannot listen for metrics on ${listen.host}:${listen.port} (--metrics-listen): ${(err as Error).message}`,
      );
    }
    const mhost = listen.host.includes(':') ? `[${listen.host}]` : listen.host;
    metricsUrl = `http://${mhost}:${(metricsServer.address() as AddressInfo).port}/metrics`;
  }
  ready = true;
  await app.webhooks.start();
  const retention = startLogRetention(database.db, {
    days: config.logRetentionDays,
    now: Date.now,
    // Claimed per batch on PostgreSQL, so that replicas never delete the same logs at once.
    dialect: database.dialect,
    onError: (err) => log.error({ err }, 'cannot delete expired deployment logs'),
    onDeleted: (count) => log.info({ deployments: count }, 'deleted expired deployment logs'),
  });
  const collection = startCacheCollection({
    collector: app.collector,
    caches: () => app.caches.all(),
    intervalMs: config.gcIntervalMs,
    log,
  });
  log.info(
    {
      url,
      dataDir: config.dataDir,
      database: database.dialect,
      blobStore: config.blobStore.kind,
      ...(metricsUrl ? { metrics: metricsUrl } : {}),
    },
    'cairn server listening',
  );
  if (tokenFile) {
    // The first five minutes: where to go, and with what.
    log.info(
      { dashboard: `${config.publicUrl ?? url}/`, tokenFile },
      'first start: sign in to the dashboard with the admin token in tokenFile (the CLI reads it from CAIRN_TOKEN)',
    );
  }

  let closing: Promise<void> | undefined;
  return {
    url,
    port,
    metricsUrl,
    routes: app.routes,
    close: () => {
      closing ??= (async () => {
        ready = false;
        // Stop accepting first: agents told to go reconnect within milliseconds, and a server
        // still listening would take them back (and then wait for those connections to end).
        const stopped = new Promise<void>((resolve) => server.close(() => resolve()));
        metricsServer?.close();
        metricsServer?.closeAllConnections();
        await app.close();
        // After the hub marked its agents offline: no one needs to sweep them.
        await lease?.close();
        await leaseDatabase?.db.destroy();
        await retention.stop();
        await collection.stop();
        await bus?.close();
        server.closeIdleConnections();
        // Requests still running after the grace period are cut.
        const cut = setTimeout(() => server.closeAllConnections(), 10_000);
        cut.unref();
        await stopped;
        clearTimeout(cut);
        await database.db.destroy();
        closeBlobs();
        log.info('cairn server stopped');
      })();
      return closing;
    },
  };
}
