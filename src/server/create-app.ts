import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import { getRequestListener } from '@hono/node-server';
import { Hono } from 'hono';
import type { Logger } from 'pino';
import { AGENT_WS_PATH } from '../protocol/agent-protocol.ts';
import { AgentHub } from './agents/agent-hub.ts';
import { LogWriter } from './agents/log-writer.ts';
import { ReplicaPlanAsker } from './agents/replica-plans.ts';
import { ServerIdentity } from './agents/server-identity.ts';
import { apiRoutes } from './api/api-routes.ts';
import { backupRoutes } from './api/backup-routes.ts';
import { Authenticator } from './auth/authenticator.ts';
import { FailedAuthLimiter } from './auth/failed-auth-limiter.ts';
import type { BackupSource } from './backup/write-backup.ts';
import type { BlobStore } from './blob/blob-store.ts';
import { DEFAULT_WORKSPACE } from './bootstrap.ts';
import { BinaryCache } from './cache/binary-cache.ts';
import { CacheCollector, DEFAULT_UPLOAD_GRACE_MS } from './cache/cache-collector.ts';
import { CacheHandler } from './cache/cache-handler.ts';
import { ClosureRepository } from './closures/closure-repository.ts';
import { registerDashboard } from './dashboard/register-dashboard.ts';
import { AgentRepository } from './db/agent-repository.ts';
import { AuditRepository } from './db/audit-repository.ts';
import { CacheGcRepository } from './db/cache-gc-repository.ts';
import { CacheRepository } from './db/cache-repository.ts';
import { DeploymentRepository } from './db/deployment-repository.ts';
import { EnrolTokenRepository } from './db/enrol-token-repository.ts';
import { LogLineRepository } from './db/log-line-repository.ts';
import type { OpenDatabase } from './db/open-database.ts';
import { PathIndex } from './db/path-index.ts';
import { TokenRepository } from './db/token-repository.ts';
import { WebhookRepository } from './db/webhook-repository.ts';
import { WorkspaceRepository } from './db/workspace-repository.ts';
import { WriteBatch } from './db/write-batch.ts';
import { type EventBus, LocalEventBus } from './events/event-bus.ts';
import { setClientAddress } from './http/client-address.ts';
import { errorResponse } from './http/error-response.ts';
import { cutSlowBody, limitRequestBodies } from './http/request-body-limits.ts';
import { TrustedProxies } from './http/trusted-proxies.ts';
import { countingBus } from './metrics/counting-bus.ts';
import { metricsRoutes } from './metrics/metrics-routes.ts';
import { ServerMetrics } from './metrics/server-metrics.ts';
import { RolloutEngine } from './rollouts/rollout-engine.ts';
import { WebhookDispatcher, type WebhookSettings } from './webhooks/webhook-dispatcher.ts';

/** What the app is built from; nothing here binds a port. */
export interface AppDeps {
  readonly database: OpenDatabase;
  readonly blobs: BlobStore;
  readonly log: Logger;
  readonly now: () => number;
  readonly publicUrl: string | undefined;
  readonly maxNarBytes: number;
  /** Failed authentications one address may make in a burst. */
  readonly failedAuthBurst?: number;
  /** Overrides the hub's limits on agent connections being set up (tests). */
  readonly agentConnectLimits?: { readonly concurrent: number; readonly waiting: number } | undefined;
  /** False until the server is ready to serve; `/healthz` answers 503 meanwhile. */
  readonly isReady: () => boolean;
  /** Proxies whose X-Forwarded-For is believed (`--trusted-proxy`); none by default. */
  readonly trustedProxies?: readonly string[];
  /** How long an API or dashboard body may take to arrive after its headers (default 20 s). */
  readonly bodyTimeoutMs?: number;
  /** The event bus; in-memory unless replicas share one. */
  readonly bus?: EventBus;
  /** Agents that were online when the server before this one stopped (they are reconnecting). */
  readonly reconnecting?: readonly number[];
  /** This replica's id, recorded with each agent's hello (replicas sharing PostgreSQL). */
  readonly replicaId?: string;
  /** One series per agent in `/metrics` (`--metrics-per-agent`); off by default. */
  readonly metricsPerAgent?: boolean;
  /** Webhook delivery settings. */
  readonly webhooks: WebhookSettings;
  /** The URL the server listens at, once it does: dashboard links in webhooks use it without --public-url. */
  readonly listenUrl: () => string;
  /** What `GET /api/v1/server/backup` archives; without it, that route answers NOT_SUPPORTED. */
  readonly backupSource?: BackupSource;
  /** A NAR file no narinfo names is collected once this old (default 1 h). */
  readonly gcUploadGraceMs?: number;
}

/** The server's request handling, ready to be attached to a Node HTTP server. */
export interface App {
  /** Handles every request. */
  readonly onRequest: (req: IncomingMessage, res: ServerResponse) => void;
  /** Handles a request with `Expect: 100-continue`: credentials are checked before the body is sent. */
  readonly onCheckContinue: (req: IncomingMessage, res: ServerResponse) => void;
  /** Handles an HTTP upgrade: the agent WebSocket. */
  readonly onUpgrade: (req: IncomingMessage, socket: Duplex, head: Buffer) => void;
  /** The agent connections. */
  readonly hub: AgentHub;
  /** The Prometheus metrics, served at `/metrics` (and by the metrics listener, if any). */
  readonly metrics: ServerMetrics;
  /** Sends webhooks from the outbox; started once the server listens. */
  readonly webhooks: WebhookDispatcher;
  /** Collects the caches' garbage. */
  readonly collector: CacheCollector;
  /** Every cache, for the collector's rounds. */
  readonly caches: CacheRepository;
  /** Closes agent connections and flushes buffered writes. */
  close(): Promise<void>;
  /** Every route of the JSON API and dashboard, for the authorization table test. */
  readonly routes: ReadonlyArray<{ method: string; path: string }>;
}

/** How often fetched paths are written as last accessed (the collector's retention reads them). */
const TOUCH_FLUSH_MS = 30_000;

/** Builds the app: the JSON API and health check on Hono, the binary cache on Node's HTTP objects. */
export function createApp(deps: AppDeps): App {
  const db = deps.database.db;
  const tokens = new TokenRepository(db);
  const caches = new CacheRepository(db);
  const index = new PathIndex(db);
  // The hub is made below; until then no agent is connected.
  let connectedAgents = () => 0;
  const metrics = new ServerMetrics({
    db,
    perAgent: deps.metricsPerAgent ?? false,
    connectedAgents: () => connectedAgents(),
  });
  // Deployments reaching a final state are counted as they are announced.
  const bus = countingBus(deps.bus ?? new LocalEventBus(), metrics);
  const auth = new Authenticator(tokens, {
    now: deps.now,
    limiter: new FailedAuthLimiter({
      now: deps.now,
      ...(deps.failedAuthBurst === undefined ? {} : { burst: deps.failedAuthBurst }),
    }),
  });
  // A revoked token stops working at once, though it was remembered a moment ago.
  const unsubscribeRevoked = bus.subscribe('token-revoked', ({ tokenId }) => auth.forget(tokenId));
  const gcRepo = new CacheGcRepository(db, deps.database.dialect);
  const binaryCache = new BinaryCache({
    caches,
    index,
    blobs: deps.blobs,
    now: deps.now,
    maxNarBytes: deps.maxNarBytes,
    locks: gcRepo,
  });
  // Narinfos are served signed by the cache's active keys: a rotation here or on another replica
  // re-signs them, and a re-sync (a doorbell may have been lost) checks every cache held.
  const unsubscribeCacheKeys = [
    bus.subscribe('cache-keys', ({ cache }) => binaryCache.forget(cache)),
    bus.subscribe('resync', () => {
      binaryCache
        .revalidate()
        .catch((err) =>
          deps.log.warn({ err }, 'cannot re-read the caches’ signing keys; retrying at the next re-sync'),
        );
    }),
  ];
  // Fetches are written as last accesses in batches; the collector flushes them too.
  const touchTimer = setInterval(() => {
    binaryCache.flushTouches().catch((err) => deps.log.warn({ err }, 'cannot record cache accesses'));
  }, TOUCH_FLUSH_MS);
  touchTimer.unref();
  const collector = new CacheCollector({
    repo: gcRepo,
    binaryCache,
    now: deps.now,
    holder: deps.replicaId ?? 'server',
    uploadGraceMs: deps.gcUploadGraceMs ?? DEFAULT_UPLOAD_GRACE_MS,
    onRemoved: (cacheId) => bus.publish('cache-changed', { cacheId, local: true }),
  });
  // Another replica removed narinfos, or events may have been missed: read them again.
  const unsubscribeCaches = [
    bus.subscribe('cache-changed', ({ cacheId, local }) => {
      if (!local) binaryCache.forgetCache(cacheId);
    }),
    bus.subscribe('resync', () => binaryCache.forgetCache()),
  ];
  const audit = new AuditRepository(db);
  const cacheHandler = new CacheHandler({ cache: binaryCache, auth, log: deps.log, audit, metrics });
  const closures = new ClosureRepository(db);
  const agents = new AgentRepository(db);
  const deployments = new DeploymentRepository(db);
  const logs = new LogWriter(
    new LogLineRepository(db),
    (err) => deps.log.error({ err }, 'cannot write deployment logs'),
    (event) => bus.publish('log', event),
  );
  // The agents' small writes, a transaction per 20 ms; log lines are written before each.
  const writes = new WriteBatch(db, () => logs.flush());
  const hub = new AgentHub({
    auth,
    agents,
    deployments,
    caches,
    bus,
    logs,
    writes,
    log: deps.log,
    now: deps.now,
    // Behind a proxy --public-url says where agents reach us; else the address they used does.
    baseUrl: (requestBase) => deps.publicUrl ?? requestBase,
    closures,
    identity: new ServerIdentity(db),
    // One process owns an SQLite database: its next start marks every agent offline and counts
    // those that were online as reconnecting (the staged-rollout engine waits for them).
    markOfflineOnClose: deps.database.dialect !== 'sqlite',
    replicaId: deps.replicaId,
    metrics,
    ...(deps.agentConnectLimits ? { connectLimits: deps.agentConnectLimits } : {}),
  });
  connectedAgents = () => hub.connected;
  // Plans reach machines held here, and with replicas those held by the others.
  const planAsker = new ReplicaPlanAsker({
    hub,
    db,
    bus,
    log: deps.log,
    now: deps.now,
    replicated: deps.database.dialect === 'postgres',
  });

  // Staged rollouts: decided on a tick and on agent events, from the database alone.
  const rollouts = new RolloutEngine({
    db,
    deployments,
    bus,
    log: deps.log,
    now: deps.now,
    reconnecting: deps.reconnecting ?? [],
    dialect: deps.database.dialect,
    metrics,
  });
  rollouts.start();

  // Webhooks: the outbox rows written with each state change, sent on a claimed tick.
  const webhookRepo = new WebhookRepository(db);
  const webhooks = new WebhookDispatcher({
    db,
    dialect: deps.database.dialect,
    bus,
    log: deps.log,
    now: deps.now,
    settings: deps.webhooks,
    baseUrl: () => deps.publicUrl ?? deps.listenUrl(),
  });

  const app = new Hono();
  // First: every body is limited while it streams, before any route reads it.
  app.use('*', limitRequestBodies());
  registerDashboard(app, {
    rollouts,
    webhooks: webhookRepo,
    db,
    auth,
    bus,
    agents,
    deployments,
    caches,
    index,
    closures,
    collector,
    gc: gcRepo,
    audit,
    flushLogs: () => logs.flush(),
    now: deps.now,
    log: deps.log,
    metrics,
    planAsker,
  });
  app.get('/healthz', (c) => (deps.isReady() ? c.text('ok\n') : c.text('starting\n', 503)));
  app.route('/', metricsRoutes({ auth, metrics }));
  app.route(
    '/api/v1',
    backupRoutes({
      auth,
      workspaces: new WorkspaceRepository(db),
      adminWorkspace: DEFAULT_WORKSPACE,
      audit,
      source: deps.backupSource,
      now: deps.now,
    }),
  );
  app.route(
    '/api/v1',
    apiRoutes({
      auth,
      workspaces: new WorkspaceRepository(db),
      tokens,
      caches,
      index,
      binaryCache,
      collector,
      gc: gcRepo,
      bus,
      audit,
      closures,
      flushLogs: () => logs.flush(),
      agents,
      enrolTokens: new EnrolTokenRepository(db),
      deployments,
      planAsker,
      rollouts,
      webhooks: webhookRepo,
      webhookSettings: deps.webhooks,
      wakeWebhooks: () => webhooks.wake(),
      now: deps.now,
      baseUrl: (requestUrl) => deps.publicUrl ?? new URL(requestUrl).origin,
      metrics,
    }),
  );
  app.notFound((c) =>
    c.json({ code: 'NOT_FOUND', message: `Cannot find ${c.req.method} ${c.req.path}` }, 404),
  );
  app.onError((err, c) => {
    const { status, body, headers } = errorResponse(err, deps.log);
    return c.json(body, status as 400, headers);
  });
  const honoListener = getRequestListener(app.fetch);

  const proxies = new TrustedProxies(deps.trustedProxies ?? []);
  const dispatch = (req: IncomingMessage, res: ServerResponse, expectContinue: boolean) => {
    setClientAddress(req, proxies.clientOf(req));
    if (req.url?.startsWith('/cache/')) {
      void cacheHandler.handle(req, res, expectContinue);
      return;
    }
    cutSlowBody(req, res, deps.bodyTimeoutMs ?? 20_000);
    if (expectContinue) res.writeContinue();
    void honoListener(req, res);
  };
  return {
    onRequest: (req, res) => dispatch(req, res, false),
    onCheckContinue: (req, res) => dispatch(req, res, true),
    onUpgrade: (req, socket, head) => {
      setClientAddress(req, proxies.clientOf(req));
      if (req.url?.split('?')[0] === AGENT_WS_PATH) {
        void hub.handleUpgrade(req, socket, head);
        return;
      }
      socket.end('HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n');
    },
    hub,
    metrics,
    webhooks,
    collector,
    caches,
    close: async () => {
      unsubscribeRevoked();
      for (const off of unsubscribeCacheKeys) off();
      for (const u of unsubscribeCaches) u();
      planAsker.close();
      clearInterval(touchTimer);
      await binaryCache.flushTouches().catch((err) => deps.log.warn({ err }, 'cannot record cache accesses'));
      rollouts.close();
      await webhooks.close();
      await hub.close();
    },
    routes: app.routes.filter((r) => r.method !== 'ALL').map((r) => ({ method: r.method, path: r.path })),
  };
}
