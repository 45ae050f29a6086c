import { randomUUID } from 'node:crypto';
import type { Kysely } from 'kysely';
import type { Database, TokensTable } from './database-schema.ts';
import { IN_LIST_SIZE, inChunks } from './in-chunks.ts';

/** A token row without its hash. */
export type TokenRow = Omit<TokensTable, 'hash'>;

/** Stores tokens: only their hashes, never the secrets. */
export class TokenRepository {
  constructor(private readonly db: Kysely<Database>) {}

  /** Records a new token and returns its id. */
  async create(row: {
    workspaceId: number;
    name: string;
    hash: string;
    scopes: readonly string[];
    createdAt: number;
    expiresAt: number | null;
  }): Promise<string> {
    const id = randomUUID();
    await this.db
      .insertInto('tokens')
      .values({
        id,
        workspace_id: row.workspaceId,
        name: row.name,
        hash: row.hash,
        scopes: JSON.stringify(row.scopes),
        created_at: row.createdAt,
        expires_at: row.expiresAt,
        revoked_at: null,
        last_used_at: null,
      })
      .execute();
    return id;
  }

  /** The token with this hash, if any (revoked and expired ones too: the caller decides). */
  async findByHash(hash: string): Promise<TokensTable | undefined> {
    return await this.db.selectFrom('tokens').selectAll().where('hash', '=', hash).executeTakeFirst();
  }

  /** {@link findByHash} for many hashes, by hash (one query per thousand). */
  async findByHashes(hashes: readonly string[]): Promise<Map<string, TokensTable>> {
    const out = new Map<string, TokensTable>();
    for (const part of inChunks([...new Set(hashes)], IN_LIST_SIZE)) {
      const rows = await this.db.selectFrom('tokens').selectAll().where('hash', 'in', part).execute();
      for (const r of rows) out.set(r.hash, r);
    }
    return out;
  }

  async list(workspaceId: number): Promise<TokenRow[]> {
    return await this.db
      .selectFrom('tokens')
      .select([
        'id',
        'workspace_id',
        'name',
        'scopes',
        'created_at',
        'expires_at',
        'revoked_at',
        'last_used_at',
      ])
      .where('workspace_id', '=', workspaceId)
      // Tokens made in the same millisecond tie; without a tie-breaker PostgreSQL returns them
      // in heap order, which an update (a revocation) changes, and SQLite in rowid order.
      .orderBy('created_at')
      .orderBy('name')
      .orderBy('id')
      .execute();
  }

  /** Marks live tokens with this id or name revoked; returns the ids revoked (none when nothing matched). */
  async revoke(workspaceId: number, idOrName: string, now: number): Promise<string[]> {
    const rows = await this.db
      .updateTable('tokens')
      .set({ revoked_at: now })
      .where('workspace_id', '=', workspaceId)
      .where('revoked_at', 'is', null)
      .where((eb) => eb.or([eb('id', '=', idOrName), eb('name', '=', idOrName)]))
      .returning('id')
      .execute();
    return rows.map((r) => r.id);
  }

  /** Records when a token was last used (callers throttle this). */
  async touch(id: string, now: number): Promise<void> {
    await this.db.updateTable('tokens').set({ last_used_at: now }).where('id', '=', id).execute();
  }

  /** {@link touch} for many tokens used at about the same moment (one statement per thousand). */
  async touchMany(ids: readonly string[], now: number): Promise<void> {
    for (const part of inChunks([...new Set(ids)], IN_LIST_SIZE))
      await this.db.updateTable('tokens').set({ last_used_at: now }).where('id', 'in', part).execute();
  }
}
