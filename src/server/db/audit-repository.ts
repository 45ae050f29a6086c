import type { Kysely, Selectable } from 'kysely';
import type { AuditLogTable, Database } from './database-schema.ts';

/** An audit log row. */
export type AuditRow = Selectable<AuditLogTable>;

/** What an audit entry says. */
export interface AuditEntry {
  readonly workspaceId: number;
  readonly tokenId: string | null;
  readonly tokenName: string | null;
  /** Such as `token.create`, `agent.revoke`, `rollout.create`, `cache.push`. */
  readonly action: string;
  /** What it was done to: a cache, token, agent, rollout or store path. */
  readonly target: string;
  readonly address: string | null;
  readonly detail?: Record<string, unknown>;
}

/** Stores the audit log: append-only. */
export class AuditRepository {
  constructor(private readonly db: Kysely<Database>) {}

  async record(entry: AuditEntry, at: number): Promise<void> {
    await this.db
      .insertInto('audit_log')
      .values({
        workspace_id: entry.workspaceId,
        at,
        token_id: entry.tokenId,
        token_name: entry.tokenName,
        action: entry.action,
        target: entry.target,
        address: entry.address,
        detail: entry.detail === undefined ? null : JSON.stringify(entry.detail),
      })
      .execute();
  }

  /** The newest entries first, optionally before an id (for paging). */
  async list(workspaceId: number, options: { limit: number; beforeId?: number }): Promise<AuditRow[]> {
    let q = this.db.selectFrom('audit_log').selectAll().where('workspace_id', '=', workspaceId);
    if (options.beforeId !== undefined) q = q.where('id', '<', options.beforeId);
    return await q.orderBy('id', 'desc').limit(options.limit).execute();
  }
}
