import { randomBytes } from 'node:crypto';
import { type Kysely, sql } from 'kysely';
import type { WEBHOOK_TEST_EVENT, WebhookEvent } from '../../protocol/webhook-schemas.ts';
import type { Database } from './database-schema.ts';
import { inChunks } from './in-chunks.ts';

/** One event to tell the endpoints of a workspace that subscribed to it. */
export interface WebhookMessage {
  readonly workspaceId: number;
  readonly event: WebhookEvent | typeof WEBHOOK_TEST_EVENT;
  /** The payload's `data`: ids, states, and `path`, the dashboard page (made a URL when sent). */
  readonly data: Readonly<Record<string, string | number | boolean | null>>;
  readonly at: number;
  /** Only this endpoint, whatever it subscribed to (`cairn webhook test`). */
  readonly endpointId?: number;
}

/** A new message id: the `webhook-id` of every attempt of every delivery of one event. */
export function newMessageId(): string {
  return `msg_${randomBytes(16).toString('base64url')}`;
}

/**
 * Writes the outbox rows for `messages`: one pending delivery per live endpoint that subscribed
 * to the event, in one statement per 200 messages, with no row at all when no endpoint wants it.
 * Call it with the transaction that makes the state change the messages tell about, so that both
 * or neither are written. Returns the ids of the deliveries written.
 */
export async function enqueueWebhooks(
  db: Kysely<Database>,
  messages: readonly WebhookMessage[],
): Promise<number[]> {
  const written: number[] = [];
  if (messages.length === 0) return written;
  // Most writes happen where nobody listens: a look at the endpoints is much cheaper than the
  // INSERT of a few hundred rows of VALUES that would select none of them.
  if (
    !(await anyEndpoint(
      db,
      messages.map((m) => m.workspaceId),
    ))
  )
    return written;
  for (const part of inChunks(messages, 200)) {
    const values = sql.join(
      part.map(
        (m) =>
          sql`(cast(${m.workspaceId} as integer), cast(${newMessageId()} as text), cast(${m.event} as text), cast(${JSON.stringify(m.data)} as text), cast(${m.at} as bigint), cast(${m.endpointId ?? null} as integer))`,
      ),
    );
    const { rows } = await sql<{ id: number }>`
      insert into webhook_deliveries
        (endpoint_id, workspace_id, message_id, event, data, created_at, state, attempts, next_attempt_at)
      select e.id, e.workspace_id, v.column2, v.column3, v.column4, v.column5, 'pending', 0, v.column5
      from (values ${values}) as v
      join webhook_endpoints e on e.workspace_id = v.column1
      where e.deleted_at is null and e.disabled_at is null
        and ((v.column6 is null and e.events like ('%"' || v.column3 || '"%')) or e.id = v.column6)
      returning id`.execute(db);
    written.push(...rows.map((r) => Number(r.id)));
  }
  return written;
}

/** True when one of these workspaces has a webhook endpoint that is neither deleted nor disabled. */
export async function anyEndpoint(db: Kysely<Database>, workspaceIds: readonly number[]): Promise<boolean> {
  const row = await db
    .selectFrom('webhook_endpoints')
    .select('id')
    .where('workspace_id', 'in', [...new Set(workspaceIds)])
    .where('deleted_at', 'is', null)
    .where('disabled_at', 'is', null)
    .limit(1)
    .executeTakeFirst();
  return row !== undefined;
}

/**
 * Runs `work` in a transaction: `db`'s own when it is one (the write batch's), else a new one.
 * The write batch retries a failed batch's writes one by one outside any transaction; a state
 * change and its outbox rows must still be written together then.
 */
export async function inTransaction<T>(
  db: Kysely<Database>,
  work: (trx: Kysely<Database>) => Promise<T>,
): Promise<T> {
  if (db.isTransaction) return await work(db);
  return await db.transaction().execute(work);
}
