import type { Kysely } from 'kysely';
import type { Database } from '../db/database-schema.ts';

/**
 * Whom an agent talks to, as `welcome` tells it: the server's id (kept in the database) and the
 * name of the agent's workspace. Both never change, so each is read once and kept.
 */
export class ServerIdentity {
  readonly #db: Kysely<Database>;
  #serverId: Promise<string> | undefined;
  readonly #workspaces = new Map<number, Promise<string>>();

  constructor(db: Kysely<Database>) {
    this.#db = db;
  }

  /** The server's id, made by the migration that added it. */
  serverId(): Promise<string> {
    this.#serverId ??= this.#db
      .selectFrom('server_identity')
      .select('server_id')
      .where('id', '=', 1)
      .executeTakeFirstOrThrow()
      .then((r) => r.server_id);
    // A failed read (the database was down) is tried again next time.
    this.#serverId.catch(() => {
      this.#serverId = undefined;
    });
    return this.#serverId;
  }

  /** The name of a workspace. */
  workspaceName(workspaceId: number): Promise<string> {
    let name = this.#workspaces.get(workspaceId);
    if (!name) {
      name = this.#db
        .selectFrom('workspaces')
        .select('name')
        .where('id', '=', workspaceId)
        .executeTakeFirstOrThrow()
        .then((r) => r.name);
      this.#workspaces.set(workspaceId, name);
      name.catch(() => this.#workspaces.delete(workspaceId));
    }
    return name;
  }
}
