import { setMaxListeners } from 'node:events';
import type { Kysely } from 'kysely';
import type { Logger } from 'pino';
import type { Database } from '../db/database-schema.ts';
import type { SqlDialect } from '../db/sql-types.ts';
import { enqueueWebhooks } from '../db/webhook-outbox.ts';
import { failPending, type WebhookDeliveryRow, type WebhookEndpointRow } from '../db/webhook-repository.ts';
import type { EventBus } from '../events/event-bus.ts';
import { type SendOutcome, sendWebhook } from './send-webhook.ts';
import { signWebhook } from './sign-webhook.ts';

/** The webhook settings of the server (see server-config.ts). */
export interface WebhookSettings {
  /** Send to loopback, private and reserved addresses too (`CAIRN_WEBHOOK_ALLOW_PRIVATE`). */
  readonly allowPrivate: boolean;
  /** The delays between attempts, in ms: one attempt more than delays (`CAIRN_WEBHOOK_RETRY_SCHEDULE`). */
  readonly retryScheduleMs: readonly number[];
  /** The longest one attempt may take (`CAIRN_WEBHOOK_TIMEOUT_SECONDS`). */
  readonly timeoutMs: number;
  /** How often due deliveries are looked for when nothing wakes the dispatcher (`CAIRN_WEBHOOK_POLL_SECONDS`). */
  readonly pollMs: number;
  /** An agent offline this long is announced by `agent.offline` (`CAIRN_AGENT_OFFLINE_GRACE_SECONDS`). */
  readonly agentOfflineGraceMs: number;
  /** Finished deliveries are deleted this long after they finished (`--log-retention-days`). */
  readonly retentionMs: number;
}

/** The default schedule: 11 retries over about a day (5 s, 30 s, 2 m, 5 m, 15 m, 30 m, 1 h, 2 h, 4 h, 8 h, 8 h). */
export const DEFAULT_RETRY_SCHEDULE_MS: readonly number[] = [
  5_000, 30_000, 120_000, 300_000, 900_000, 1_800_000, 3_600_000, 7_200_000, 14_400_000, 28_800_000,
  28_800_000,
];

/** Deliveries being sent at once, at most (by this replica). */
const MAX_IN_FLIGHT = 50;
/** A claim outlives the attempt's timeout by this much before another replica may take the row. */
const CLAIM_MARGIN_MS = 5_000;
/** The least time between two rounds. */
const MIN_ROUND_SPACING_MS = 50;
/** Agents announced offline per round. */
const OFFLINE_BATCH = 500;

/** What the dispatcher needs. */
export interface WebhookDispatcherDeps {
  readonly db: Kysely<Database>;
  readonly dialect: SqlDialect;
  readonly bus: EventBus;
  readonly log: Logger;
  readonly now: () => number;
  readonly settings: WebhookSettings;
  /** The server's URL as people reach it: the dashboard links in payloads start with it. */
  readonly baseUrl: () => string;
}

/**
 * Sends the outbox: claims due deliveries (on PostgreSQL `FOR UPDATE SKIP LOCKED`, so each is
 * sent by one replica), posts them signed, and records each attempt: a 2xx succeeds; a 410
 * disables the endpoint; anything else is retried on the schedule, and an endpoint whose
 * delivery failed every attempt with no success since it was written is disabled. Woken by the
 * events that write deliveries, with a poll as a backstop; it also announces agents that stayed
 * offline past the grace period. All state is in the database: a restarted server (or another
 * replica) carries on.
 */
export class WebhookDispatcher {
  readonly #d: WebhookDispatcherDeps;
  #timer: NodeJS.Timeout | undefined;
  #soon: NodeJS.Timeout | undefined;
  #lastRoundEnd = Number.NEGATIVE_INFINITY;
  #running: Promise<void> | undefined;
  #again = false;
  #closed = false;
  #unsubscribe: Array<() => void> = [];
  #lastOfflineScan = 0;
  #lastPrune = 0;
  readonly #inflight = new Set<Promise<void>>();
  /** Aborts the requests in flight when the server stops. */
  readonly #stopping = new AbortController();

  constructor(deps: WebhookDispatcherDeps) {
    this.#d = deps;
    // One listener per request in flight.
    setMaxListeners(MAX_IN_FLIGHT + 1, this.#stopping.signal);
  }

  /** Starts: frees this process's old claims on SQLite, then runs a round at once and on every wake. */
  async start(): Promise<void> {
    // One process owns an SQLite database: a claim left there was the previous process's, which
    // is gone (killed mid-send). On PostgreSQL another replica may hold it: its claim expires.
    if (this.#d.dialect === 'sqlite') {
      try {
        await this.#d.db
          .updateTable('webhook_deliveries')
          .set({ claimed_until: null })
          .where('state', '=', 'pending')
          .where('claimed_until', 'is not', null)
          .execute();
      } catch (err) {
        // Those deliveries wait for their claims to run out instead.
        this.#d.log.error({ err }, 'cannot free the webhook deliveries the previous server claimed');
      }
    }
    const wake = () => this.wake();
    this.#unsubscribe = [
      this.#d.bus.subscribe('deployment', (e) => {
        if (e.state !== 'pending') wake();
      }),
      this.#d.bus.subscribe('rollout', wake),
      this.#d.bus.subscribe('resync', wake),
    ];
    this.wake();
  }

  /**
   * Runs a round soon; wakes in the same turn are one round, and rounds are at least
   * {@link MIN_ROUND_SPACING_MS} apart: every step of every deployment wakes the dispatcher, and
   * ten thousand agents must not turn that into a query loop.
   */
  wake(): void {
    if (this.#closed) return;
    if (this.#running) {
      this.#again = true;
      return;
    }
    if (this.#soon) return;
    const wait = this.#lastRoundEnd + MIN_ROUND_SPACING_MS - performance.now();
    this.#soon = setTimeout(
      () => {
        this.#soon = undefined;
        void this.#round();
      },
      Math.max(0, wait),
    );
  }

  async #round(): Promise<void> {
    if (this.#running || this.#closed) return;
    if (this.#timer) clearTimeout(this.#timer);
    this.#running = (async () => {
      try {
        const now = this.#d.now();
        if (
          now - this.#lastOfflineScan >=
          Math.min(this.#d.settings.pollMs, this.#d.settings.agentOfflineGraceMs)
        ) {
          this.#lastOfflineScan = now;
          await this.announceOffline();
        }
        if (!this.#closed) await this.deliverDue();
        // An hour apart (less with a retention shorter than hours, as in tests).
        if (now - this.#lastPrune >= Math.min(3_600_000, this.#d.settings.retentionMs / 4)) {
          this.#lastPrune = now;
          await this.prune();
        }
      } catch (err) {
        this.#d.log.error({ err }, 'webhook round failed');
      }
    })();
    await this.#running;
    this.#running = undefined;
    this.#lastRoundEnd = performance.now();
    if (this.#closed) return;
    if (this.#again) {
      this.#again = false;
      this.wake();
    }
    this.#timer = setTimeout(() => this.wake(), this.#d.settings.pollMs);
    this.#timer.unref();
  }

  /**
   * Writes `agent.offline` for agents offline longer than the grace period and not announced
   * since they went offline; the mark and the outbox rows in one transaction (on PostgreSQL
   * the agents are claimed `FOR UPDATE SKIP LOCKED`). Returns how many were announced.
   */
  async announceOffline(): Promise<number> {
    const now = this.#d.now();
    const cutoff = now - this.#d.settings.agentOfflineGraceMs;
    return await this.#d.db.transaction().execute(async (trx) => {
      let q = trx
        .selectFrom('agents')
        .select(['id', 'workspace_id', 'name', 'last_seen_at'])
        .where('online', '=', 0)
        .where('offline_since', 'is not', null)
        .where('offline_since', '<=', cutoff)
        .where((eb) =>
          eb.or([
            eb('offline_notified_at', 'is', null),
            eb('offline_notified_at', '<', eb.ref('offline_since')),
          ]),
        )
        .orderBy('id')
        .limit(OFFLINE_BATCH);
      if (this.#d.dialect === 'postgres') q = q.forUpdate().skipLocked();
      const rows = await q.execute();
      if (rows.length === 0) return 0;
      await trx
        .updateTable('agents')
        .set({ offline_notified_at: now })
        .where(
          'id',
          'in',
          rows.map((r) => r.id),
        )
        .execute();
      await enqueueWebhooks(
        trx,
        rows.map((r) => ({
          workspaceId: r.workspace_id,
          event: 'agent.offline' as const,
          at: now,
          data: {
            agent: r.name,
            lastSeenAt: new Date(r.last_seen_at ?? now).toISOString(),
            path: `/agents/${encodeURIComponent(r.name)}`,
          },
        })),
      );
      return rows.length;
    });
  }

  /**
   * Deletes the deliveries that finished longer ago than the retention; replicas doing it at once
   * delete nothing twice. Returns how many were deleted.
   */
  async prune(): Promise<number> {
    const r = await this.#d.db
      .deleteFrom('webhook_deliveries')
      .where('finished_at', '<', this.#d.now() - this.#d.settings.retentionMs)
      .executeTakeFirst();
    return Number(r.numDeletedRows);
  }

  /**
   * Claims due deliveries, as many as there is room for in flight, and starts sending them; each
   * one's end wakes the dispatcher for the next. Returns how many were claimed. A slow receiver
   * holds one place in flight for up to the timeout, never the others' deliveries.
   */
  async deliverDue(): Promise<number> {
    const room = MAX_IN_FLIGHT - this.#inflight.size;
    if (room <= 0) return 0;
    const now = this.#d.now();
    const claimed = await this.#d.db.transaction().execute(async (trx) => {
      let q = trx
        .selectFrom('webhook_deliveries')
        .selectAll()
        .where('state', '=', 'pending')
        .where('next_attempt_at', '<=', now)
        .where((eb) => eb.or([eb('claimed_until', 'is', null), eb('claimed_until', '<', now)]))
        .orderBy('next_attempt_at')
        .orderBy('id')
        .limit(room);
      if (this.#d.dialect === 'postgres') q = q.forUpdate().skipLocked();
      const rows = await q.execute();
      if (rows.length === 0) return rows;
      await trx
        .updateTable('webhook_deliveries')
        .set({ claimed_until: now + this.#d.settings.timeoutMs + CLAIM_MARGIN_MS })
        .where(
          'id',
          'in',
          rows.map((r) => r.id),
        )
        .execute();
      return rows;
    });
    if (claimed.length === 0) return 0;
    const endpoints = new Map(
      (
        await this.#d.db
          .selectFrom('webhook_endpoints')
          .selectAll()
          .where('id', 'in', [...new Set(claimed.map((r) => r.endpoint_id))])
          .execute()
      ).map((e) => [e.id, e]),
    );
    for (const row of claimed) {
      const sending: Promise<void> = this.#deliver(row, endpoints.get(row.endpoint_id)).finally(() => {
        this.#inflight.delete(sending);
        this.wake();
      });
      this.#inflight.add(sending);
    }
    return claimed.length;
  }

  async #deliver(row: WebhookDeliveryRow, endpoint: WebhookEndpointRow | undefined): Promise<void> {
    try {
      if (!endpoint || endpoint.deleted_at !== null || endpoint.disabled_at !== null) {
        await this.#finish(row, {
          state: 'failed',
          error: 'the endpoint was deleted or disabled',
          attempted: false,
        });
        return;
      }
      // While a rotation's old secret is kept, every delivery is signed with both.
      const secrets =
        endpoint.previous_secret !== null && (endpoint.previous_secret_until ?? 0) > this.#d.now()
          ? [endpoint.secret, endpoint.previous_secret]
          : [endpoint.secret];
      const outcome = await this.#send(row, endpoint.url, secrets);
      await this.#record(row, outcome);
    } catch (err) {
      this.#d.log.error({ err, delivery: row.id }, 'cannot record a webhook delivery');
    }
  }

  async #send(row: WebhookDeliveryRow, url: string, secrets: readonly string[]): Promise<SendOutcome> {
    const data = JSON.parse(row.data) as Record<string, unknown>;
    const { path, ...rest } = data;
    const body = JSON.stringify({
      type: row.event,
      timestamp: new Date(row.created_at).toISOString(),
      data: { ...rest, ...(typeof path === 'string' ? { url: `${this.#d.baseUrl()}${path}` } : {}) },
    });
    const timestamp = Math.floor(this.#d.now() / 1000);
    return await sendWebhook(
      {
        url,
        allowPrivate: this.#d.settings.allowPrivate,
        timeoutMs: this.#d.settings.timeoutMs,
        signal: this.#stopping.signal,
      },
      {
        headers: {
          'webhook-id': row.message_id,
          'webhook-timestamp': String(timestamp),
          'webhook-signature': signWebhook(secrets, { id: row.message_id, timestamp, body }),
        },
        body,
      },
    );
  }

  /** Records one attempt's outcome: success, a retry, or a failure (disabling the endpoint if due). */
  async #record(row: WebhookDeliveryRow, o: SendOutcome): Promise<void> {
    const now = this.#d.now();
    const attempts = row.attempts + 1;
    const status = o.kind === 'answered' ? o.status : null;
    if (o.kind === 'answered' && status! >= 200 && status! < 300) {
      await this.#d.db.transaction().execute(async (trx) => {
        await trx
          .updateTable('webhook_deliveries')
          .set({
            state: 'succeeded',
            attempts,
            last_attempt_at: now,
            last_status: status,
            last_error: null,
            finished_at: now,
            next_attempt_at: null,
            claimed_until: null,
          })
          .where('id', '=', row.id)
          .execute();
        await trx
          .updateTable('webhook_endpoints')
          .set({ last_success_at: now })
          .where('id', '=', row.endpoint_id)
          .execute();
      });
      return;
    }
    const error =
      o.kind === 'answered'
        ? `answered ${o.status}${o.status >= 300 && o.status < 400 ? ' (redirects are not followed)' : ''}`
        : o.error;
    if (o.kind === 'answered' && o.status === 410) {
      await this.#finish(
        row,
        { state: 'failed', status, error },
        {
          disable: `answered 410 Gone to delivery ${row.id}`,
        },
      );
      return;
    }
    if (o.kind === 'refused') {
      await this.#finish(row, { state: 'failed', status, error: `refused: ${error}` });
      return;
    }
    const schedule = this.#d.settings.retryScheduleMs;
    const delay = schedule[row.attempts];
    if (delay === undefined) {
      // Every attempt failed. An endpoint with no success since this event was written has
      // been failing all that time (a day, by default): it is disabled, and shown as such.
      const endpoint = await this.#d.db
        .selectFrom('webhook_endpoints')
        .select('last_success_at')
        .where('id', '=', row.endpoint_id)
        .executeTakeFirst();
      const failing =
        endpoint && (endpoint.last_success_at === null || endpoint.last_success_at < row.created_at);
      await this.#finish(
        row,
        { state: 'failed', status, error },
        failing
          ? { disable: `every attempt failed since ${new Date(row.created_at).toISOString()} (${error})` }
          : {},
      );
      return;
    }
    const wait = Math.min(Math.max(delay, o.kind === 'answered' ? (o.retryAfterMs ?? 0) : 0), 86_400_000);
    await this.#d.db
      .updateTable('webhook_deliveries')
      .set({
        attempts,
        last_attempt_at: now,
        last_status: status,
        last_error: error,
        next_attempt_at: now + wait,
        claimed_until: null,
      })
      .where('id', '=', row.id)
      .execute();
    this.#retryAt(wait);
  }

  async #finish(
    row: WebhookDeliveryRow,
    r: { state: 'failed'; status?: number | null; error: string; attempted?: boolean },
    options: { disable?: string } = {},
  ): Promise<void> {
    const now = this.#d.now();
    await this.#d.db.transaction().execute(async (trx) => {
      await trx
        .updateTable('webhook_deliveries')
        .set({
          state: r.state,
          attempts: r.attempted === false ? row.attempts : row.attempts + 1,
          last_attempt_at: now,
          last_status: r.status ?? null,
          last_error: r.error,
          finished_at: now,
          next_attempt_at: null,
          claimed_until: null,
        })
        .where('id', '=', row.id)
        .execute();
      if (options.disable !== undefined) {
        await trx
          .updateTable('webhook_endpoints')
          .set({ disabled_at: now, disabled_reason: options.disable })
          .where('id', '=', row.endpoint_id)
          .where('disabled_at', 'is', null)
          .execute();
        await failPending(trx, row.endpoint_id, now, 'the endpoint was disabled');
        this.#d.log.warn({ endpoint: row.endpoint_id, reason: options.disable }, 'webhook endpoint disabled');
      }
    });
  }

  /** Wakes the dispatcher when a retry falls due before the next poll. */
  #retryAt(ms: number): void {
    if (ms >= this.#d.settings.pollMs || this.#closed) return;
    setTimeout(() => this.wake(), ms + 5).unref();
  }

  /** Stops waking, waits for the round in progress, and cuts the requests in flight. */
  async close(): Promise<void> {
    this.#closed = true;
    for (const u of this.#unsubscribe) u();
    if (this.#timer) clearTimeout(this.#timer);
    if (this.#soon) clearTimeout(this.#soon);
    await this.#running;
    // Requests in flight are cut and recorded as failed attempts: they are retried, by this
    // server's next start or another replica.
    this.#stopping.abort();
    await Promise.all([...this.#inflight]);
  }
}
