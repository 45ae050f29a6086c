import type { Kysely, Selectable } from 'kysely';
import type { Database, EnrolTokensTable } from './database-schema.ts';

/** An enrolment token row without its hash. */
export type EnrolTokenRow = Omit<Selectable<EnrolTokensTable>, 'hash'>;

const COLUMNS = [
  'id',
  'workspace_id',
  'max_uses',
  'uses',
  'tags',
  'name_pattern',
  'require_approval',
  'created_at',
  'created_by',
  'expires_at',
  'revoked_at',
] as const;

/** Stores enrolment tokens (their hashes only) and counts their uses. */
export class EnrolTokenRepository {
  constructor(private readonly db: Kysely<Database>) {}

  /** Records a new enrolment token and returns its row. */
  async create(row: {
    workspaceId: number;
    hash: string;
    maxUses: number;
    tags: readonly string[];
    namePattern: string | null;
    requireApproval: boolean;
    createdAt: number;
    createdBy: string;
    expiresAt: number | null;
  }): Promise<EnrolTokenRow> {
    return await this.db
      .insertInto('enrol_tokens')
      .values({
        workspace_id: row.workspaceId,
        hash: row.hash,
        max_uses: row.maxUses,
        tags: JSON.stringify(row.tags),
        name_pattern: row.namePattern,
        require_approval: row.requireApproval ? 1 : 0,
        created_at: row.createdAt,
        created_by: row.createdBy,
        expires_at: row.expiresAt,
        revoked_at: null,
      })
      .returning(COLUMNS)
      .executeTakeFirstOrThrow();
  }

  /** The token with this hash, whatever its state (the caller says why it cannot be used). */
  async byHash(hash: string): Promise<EnrolTokenRow | undefined> {
    return await this.db
      .selectFrom('enrol_tokens')
      .select(COLUMNS)
      .where('hash', '=', hash)
      .executeTakeFirst();
  }

  /** The workspace's enrolment tokens, oldest first. */
  async list(workspaceId: number): Promise<EnrolTokenRow[]> {
    return await this.db
      .selectFrom('enrol_tokens')
      .select(COLUMNS)
      .where('workspace_id', '=', workspaceId)
      .orderBy('id')
      .execute();
  }

  /**
   * Takes one use of a live token, in one statement, so two machines enrolling at once cannot
   * both take its last use; false when it is revoked, expired or used up.
   */
  async claimUse(id: number, now: number): Promise<boolean> {
    const r = await this.db
      .updateTable('enrol_tokens')
      .set((eb) => ({ uses: eb('uses', '+', 1) }))
      .where('id', '=', id)
      .where('revoked_at', 'is', null)
      .where((eb) => eb.or([eb('expires_at', 'is', null), eb('expires_at', '>', now)]))
      .where((eb) => eb('uses', '<', eb.ref('max_uses')))
      .executeTakeFirst();
    return r.numUpdatedRows > 0n;
  }

  /** Gives back a use taken by an enrolment that then failed (the name was taken meanwhile). */
  async releaseUse(id: number): Promise<void> {
    await this.db
      .updateTable('enrol_tokens')
      .set((eb) => ({ uses: eb('uses', '-', 1) }))
      .where('id', '=', id)
      .where('uses', '>', 0)
      .execute();
  }

  /** Revokes a live token of the workspace; false when there is none with this id. */
  async revoke(workspaceId: number, id: number, now: number): Promise<boolean> {
    const r = await this.db
      .updateTable('enrol_tokens')
      .set({ revoked_at: now })
      .where('workspace_id', '=', workspaceId)
      .where('id', '=', id)
      .where('revoked_at', 'is', null)
      .executeTakeFirst();
    return r.numUpdatedRows > 0n;
  }
}
