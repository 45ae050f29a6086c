import { randomBytes } from 'node:crypto';
import { type Kysely, sql } from 'kysely';
import pg from 'pg';
import type { Logger } from 'pino';
import { Backoff } from '../../lib/backoff.ts';
import { parseReplicaDoorbell, type ReplicaDoorbell } from '../../protocol/replica-doorbell.ts';
import type { Database } from '../db/database-schema.ts';
import { DeploymentRepository } from '../db/deployment-repository.ts';
import { type BusEvents, type EventBus, LocalEventBus } from './event-bus.ts';
import { EVENT_CHANNEL, OutgoingDoorbells } from './outgoing-doorbells.ts';

/** How often every replica re-syncs, in case a notification was lost. */
export const BACKSTOP_MS = 30_000;

/** Options of {@link PostgresEventBus}. */
export interface PostgresEventBusOptions {
  /** The PostgreSQL URL: the listener gets a connection of its own. */
  readonly url: string;
  /** The pool notifications are sent on, and deployments looked up with. */
  readonly db: Kysely<Database>;
  readonly log: Logger;
  /** Between two `resync` events when nothing else happens; {@link BACKSTOP_MS} by default. */
  readonly backstopMs?: number;
  /** The listener's reconnect delay: doubles from `min` up to `max` (ms). */
  readonly reconnectMs?: { readonly min: number; readonly max: number };
}

/**
 * The {@link EventBus} of replicas sharing PostgreSQL: events are published here at once, and
 * rung as doorbells (ids, see replica-doorbell.ts) on the other replicas with `NOTIFY`, gathered per
 * turn of the event loop. A dedicated connection `LISTEN`s; it reconnects with backoff when it
 * dies, and every (re)connect and every backstop period publishes `resync` here, so a lost
 * notification delays, never loses.
 *
 * Stays on this replica: `agent-online` (the replica holding the agent acts on it) and `resync`.
 */
export class PostgresEventBus implements EventBus {
  /** This replica's id, in every notification it sends: its own are ignored when they come back. */
  readonly replicaId = randomBytes(6).toString('hex');
  readonly #o: PostgresEventBusOptions;
  readonly #local = new LocalEventBus();
  readonly #deployments: DeploymentRepository;
  #out = new OutgoingDoorbells();
  #sendTimer: NodeJS.Immediate | undefined;
  #sending: Promise<void> = Promise.resolve();
  #client: pg.Client | undefined;
  #reconnectTimer: NodeJS.Timeout | undefined;
  readonly #backoff: Backoff;
  #backstop: NodeJS.Timeout | undefined;
  #closed = false;

  constructor(options: PostgresEventBusOptions) {
    this.#o = options;
    this.#deployments = new DeploymentRepository(options.db);
    const { min, max } = options.reconnectMs ?? { min: 100, max: 5000 };
    this.#backoff = new Backoff({ initialMs: min, maxMs: max });
  }

  /** Listens; resolves once the first `LISTEN` is in place (rejects if it cannot connect). */
  async start(): Promise<void> {
    await this.#connect();
    const every = this.#o.backstopMs ?? BACKSTOP_MS;
    this.#backstop = setInterval(() => this.#local.publish('resync', { reason: 'backstop' }), every);
    this.#backstop.unref();
  }

  publish<K extends keyof BusEvents>(type: K, event: BusEvents[K]): void {
    this.#local.publish(type, event);
    if (this.#closed) return;
    const e = event as BusEvents[keyof BusEvents];
    switch (type) {
      case 'deployment':
        this.#out.deployments.add((e as BusEvents['deployment']).deploymentId);
        break;
      case 'log': {
        const l = e as BusEvents['log'];
        // A doorbell from another replica is not rung again.
        if (l.lines.length === 0) return;
        this.#out.logs.set(l.deploymentId, l.rolloutId);
        break;
      }
      case 'desired':
        this.#out.desired.add((e as BusEvents['desired']).agentId);
        break;
      case 'rollout': {
        const r = e as BusEvents['rollout'];
        this.#out.rollouts.set(r.rolloutId, r.workspaceId);
        break;
      }
      case 'token-revoked':
        this.#out.tokens.add((e as BusEvents['token-revoked']).tokenId);
        break;
      case 'cache-keys': {
        const k = e as BusEvents['cache-keys'];
        this.#out.cacheKeys.set(k.cache, k.workspaceId);
        break;
      }
      case 'cache-changed':
        this.#out.caches.add((e as BusEvents['cache-changed']).cacheId);
        break;
      case 'plan-asked': {
        const p = e as BusEvents['plan-asked'];
        this.#out.plansAsked.set(p.requestId, p.agentId);
        break;
      }
      case 'plan-answered':
        this.#out.plansAnswered.add((e as BusEvents['plan-answered']).requestId);
        break;
      case 'agent-connected': {
        const c = e as BusEvents['agent-connected'];
        this.#out.connected.set(c.agentId, Math.max(c.epoch, this.#out.connected.get(c.agentId) ?? 0));
        break;
      }
      default:
        return;
    }
    // Everything published in this turn (a rollout's whole fan-out) goes in one notification.
    this.#sendTimer ??= setImmediate(() => void this.flush());
  }

  subscribe<K extends keyof BusEvents>(type: K, listener: (event: BusEvents[K]) => void): () => void {
    return this.#local.subscribe(type, listener);
  }

  /** Sends the doorbells gathered so far; resolves once they are sent (or failed and were logged). */
  flush(): Promise<void> {
    if (this.#sendTimer) clearImmediate(this.#sendTimer);
    this.#sendTimer = undefined;
    const out = this.#out;
    this.#out = new OutgoingDoorbells();
    if (out.empty) return this.#sending;
    const payloads = out.pack(this.replicaId);
    this.#sending = this.#sending.then(async () => {
      for (const payload of payloads) {
        try {
          await sql`select pg_notify(${EVENT_CHANNEL}, ${payload})`.execute(this.#o.db);
        } catch (err) {
          // The other replicas catch up at their next backstop re-sync.
          this.#o.log.warn(
            { err },
            'cannot notify the other replicas; they catch up within the backstop period',
          );
        }
      }
    });
    return this.#sending;
  }

  async #connect(): Promise<void> {
    const client = new pg.Client({
      connectionString: this.#o.url,
      application_name: 'cairn-events',
      // A peer that vanished without a reset is noticed by TCP, not after hours.
      keepAlive: true,
      keepAliveInitialDelayMillis: 10_000,
    });
    client.on('error', (err) => {
      if (client === this.#client) this.#o.log.warn({ err }, 'the event listener connection failed');
      this.#lost(client);
    });
    client.on('end', () => this.#lost(client));
    client.on('notification', (n) => {
      if (n.channel === EVENT_CHANNEL) this.#receive(n.payload);
    });
    try {
      await client.connect();
      await client.query(`LISTEN ${EVENT_CHANNEL}`);
    } catch (err) {
      await client.end().catch(() => {});
      throw err;
    }
    if (this.#closed) {
      await client.end().catch(() => {});
      return;
    }
    this.#client = client;
    this.#backoff.reset();
    // Whatever was rung while no one listened is caught up now.
    this.#local.publish('resync', { reason: 'connected' });
  }

  #lost(client: pg.Client): void {
    if (client !== this.#client) return;
    this.#client = undefined;
    void client.end().catch(() => {});
    if (!this.#closed) this.#reconnectSoon();
  }

  #reconnectSoon(): void {
    this.#reconnectTimer = setTimeout(() => {
      this.#reconnectTimer = undefined;
      this.#connect().catch((err) => {
        if (this.#closed) return;
        this.#o.log.warn({ err }, 'cannot reconnect the event listener; trying again');
        this.#reconnectSoon();
      });
    }, this.#backoff.next());
    this.#reconnectTimer.unref();
  }

  #receive(payload: string | undefined): void {
    const m = parseReplicaDoorbell(payload);
    if (!m) {
      this.#o.log.warn({ payload: payload?.slice(0, 200) }, 'ignored a malformed event notification');
      return;
    }
    if (m.r === this.replicaId) return;
    this.#ring(m);
  }

  /** Publishes here what another replica rang. */
  #ring(m: ReplicaDoorbell): void {
    const local = this.#local;
    if (m.all) local.publish('resync', { reason: 'fan-out' });
    for (const agentId of m.a ?? []) local.publish('desired', { agentId });
    for (const [workspaceId, rolloutId] of m.o ?? []) local.publish('rollout', { workspaceId, rolloutId });
    for (const tokenId of m.t ?? []) local.publish('token-revoked', { tokenId });
    for (const [workspaceId, cache] of m.k ?? []) local.publish('cache-keys', { workspaceId, cache });
    for (const cacheId of m.g ?? []) local.publish('cache-changed', { cacheId, local: false });
    for (const [agentId, epoch] of m.c ?? []) local.publish('agent-connected', { agentId, epoch });
    for (const [requestId, agentId] of m.p ?? []) local.publish('plan-asked', { requestId, agentId });
    for (const requestId of m.q ?? []) local.publish('plan-answered', { requestId });
    for (const [rolloutId, deploymentId] of m.l ?? [])
      local.publish('log', { rolloutId, deploymentId, agent: '', lines: [] });
    if (m.d && m.d.length > 0) void this.#deploymentsChanged(m.d);
  }

  /** The rows named by a doorbell, published as `deployment` events (a thousand per query). */
  async #deploymentsChanged(ids: readonly number[]): Promise<void> {
    try {
      for (const d of await this.#deployments.byIds(ids)) {
        this.#local.publish('deployment', {
          workspaceId: d.workspace_id,
          rolloutId: d.rollout_id,
          deploymentId: d.id,
          agent: d.agent_name,
          state: d.state as BusEvents['deployment']['state'],
          step: d.step,
          reason: d.reason,
        });
      }
    } catch (err) {
      this.#o.log.warn({ err }, 'cannot read deployments another replica changed; the backstop catches up');
    }
  }

  /** Sends what is gathered and stops listening. */
  async close(): Promise<void> {
    await this.flush();
    this.#closed = true;
    clearInterval(this.#backstop);
    clearTimeout(this.#reconnectTimer);
    const client = this.#client;
    this.#client = undefined;
    await client?.end().catch(() => {});
  }
}
