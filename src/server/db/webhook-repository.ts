import type { Kysely, Selectable } from 'kysely';
import type { Database, WebhookDeliveriesTable, WebhookEndpointsTable } from './database-schema.ts';

/** An endpoint's row. */
export type WebhookEndpointRow = Selectable<WebhookEndpointsTable>;
/** A delivery's row (the outbox). */
export type WebhookDeliveryRow = Selectable<WebhookDeliveriesTable>;

/** Stores webhook endpoints and lists their deliveries; the dispatcher sends them. */
export class WebhookRepository {
  constructor(private readonly db: Kysely<Database>) {}

  /** The database, for writing outbox rows with {@link enqueueWebhooks}. */
  get database(): Kysely<Database> {
    return this.db;
  }

  async create(row: {
    workspaceId: number;
    url: string;
    events: readonly string[];
    secret: string;
    createdAt: number;
    createdBy: string;
  }): Promise<WebhookEndpointRow> {
    return await this.db
      .insertInto('webhook_endpoints')
      .values({
        workspace_id: row.workspaceId,
        url: row.url,
        events: JSON.stringify(row.events),
        secret: row.secret,
        created_at: row.createdAt,
        created_by: row.createdBy,
      })
      .returningAll()
      .executeTakeFirstOrThrow();
  }

  /** The workspace's endpoints that were not deleted, oldest first. */
  async list(workspaceId: number): Promise<WebhookEndpointRow[]> {
    return await this.db
      .selectFrom('webhook_endpoints')
      .selectAll()
      .where('workspace_id', '=', workspaceId)
      .where('deleted_at', 'is', null)
      .orderBy('id')
      .execute();
  }

  async byId(workspaceId: number, id: number): Promise<WebhookEndpointRow | undefined> {
    return await this.db
      .selectFrom('webhook_endpoints')
      .selectAll()
      .where('workspace_id', '=', workspaceId)
      .where('id', '=', id)
      .where('deleted_at', 'is', null)
      .executeTakeFirst();
  }

  /**
   * Deletes an endpoint: it gets nothing more, and its pending deliveries fail. Its past
   * deliveries stay listed (the row is kept, marked deleted). False when there is no such endpoint.
   */
  async delete(workspaceId: number, id: number, now: number): Promise<boolean> {
    return await this.db.transaction().execute(async (trx) => {
      const r = await trx
        .updateTable('webhook_endpoints')
        .set({ deleted_at: now })
        .where('workspace_id', '=', workspaceId)
        .where('id', '=', id)
        .where('deleted_at', 'is', null)
        .executeTakeFirst();
      if (Number(r.numUpdatedRows) === 0) return false;
      await failPending(trx, id, now, 'the endpoint was deleted');
      return true;
    });
  }

  /** Enables a disabled endpoint again; false when there is no such endpoint. */
  async enable(workspaceId: number, id: number): Promise<boolean> {
    const r = await this.db
      .updateTable('webhook_endpoints')
      .set({ disabled_at: null, disabled_reason: null })
      .where('workspace_id', '=', workspaceId)
      .where('id', '=', id)
      .where('deleted_at', 'is', null)
      .executeTakeFirst();
    return Number(r.numUpdatedRows) > 0;
  }

  /**
   * Replaces an endpoint's secret with `secret`; deliveries are signed with the old one too
   * until `keepUntil`, so receivers can switch without missing one. False when there is no such endpoint.
   */
  async rotate(workspaceId: number, id: number, secret: string, keepUntil: number): Promise<boolean> {
    const r = await this.db
      .updateTable('webhook_endpoints')
      .set((eb) => ({ previous_secret: eb.ref('secret'), previous_secret_until: keepUntil, secret }))
      .where('workspace_id', '=', workspaceId)
      .where('id', '=', id)
      .where('deleted_at', 'is', null)
      .executeTakeFirst();
    return Number(r.numUpdatedRows) > 0;
  }

  async delivery(workspaceId: number, id: number): Promise<WebhookDeliveryRow | undefined> {
    return await this.db
      .selectFrom('webhook_deliveries')
      .selectAll()
      .where('workspace_id', '=', workspaceId)
      .where('id', '=', id)
      .executeTakeFirst();
  }

  /** The newest deliveries of the workspace, or of one endpoint, newest first. */
  async deliveries(
    workspaceId: number,
    options: { endpointId?: number; limit: number },
  ): Promise<WebhookDeliveryRow[]> {
    let q = this.db.selectFrom('webhook_deliveries').selectAll().where('workspace_id', '=', workspaceId);
    if (options.endpointId !== undefined) q = q.where('endpoint_id', '=', options.endpointId);
    return await q.orderBy('id', 'desc').limit(options.limit).execute();
  }
}

/** Fails an endpoint's pending deliveries with `reason` (it was deleted or disabled). */
export async function failPending(
  db: Kysely<Database>,
  endpointId: number,
  now: number,
  reason: string,
): Promise<void> {
  await db
    .updateTable('webhook_deliveries')
    .set({ state: 'failed', last_error: reason, finished_at: now, next_attempt_at: null })
    .where('endpoint_id', '=', endpointId)
    .where('state', '=', 'pending')
    .execute();
}
