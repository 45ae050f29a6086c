import type { Kysely } from 'kysely';
import type { Database } from './database-schema.ts';

/** Stores workspaces (tenants). */
export class WorkspaceRepository {
  constructor(private readonly db: Kysely<Database>) {}

  /** The workspace's id, or undefined when there is none of that name. */
  async idOf(name: string): Promise<number | undefined> {
    const row = await this.db
      .selectFrom('workspaces')
      .select('id')
      .where('name', '=', name)
      .executeTakeFirst();
    return row?.id;
  }

  /** Creates the workspace unless it exists; returns its id and whether it was created now. */
  async ensure(name: string, now: number): Promise<{ id: number; created: boolean }> {
    const existing = await this.idOf(name);
    if (existing !== undefined) return { id: existing, created: false };
    await this.db
      .insertInto('workspaces')
      .values({ name, created_at: now })
      .onConflict((oc) => oc.column('name').doNothing())
      .execute();
    const id = await this.idOf(name);
    if (id === undefined) throw new Error(`Cannot create workspace ${name}`);
    return { id, created: true };
  }
}
