import { type Kysely, type RawBuilder, type Selectable, sql } from 'kysely';
import type { Observed } from '../../protocol/agent-protocol.ts';
import type { AgentsTable, Database } from './database-schema.ts';
import { IN_LIST_SIZE, inChunks } from './in-chunks.ts';
import type { WriteGroup } from './write-batch.ts';

/** An agent row. */
export type AgentRow = Selectable<AgentsTable>;

/** Stores agents and what each last reported. */
export class AgentRepository {
  constructor(private readonly db: Kysely<Database>) {}

  /** Creates an agent; undefined when the name is taken in the workspace. */
  async create(row: {
    workspaceId: number;
    name: string;
    tokenId: string;
    createdAt: number;
    /** Set for an enrolled agent that must wait for an admin's approval. */
    pendingSince?: number;
    /** The enrolment token it enrolled with. */
    enrolledWith?: number;
    /** The hash of the key the enrolled machine keeps (see migration 18). */
    enrolKeyHash?: string;
  }): Promise<AgentRow | undefined> {
    const inserted = await this.db
      .insertInto('agents')
      .values({
        workspace_id: row.workspaceId,
        name: row.name,
        token_id: row.tokenId,
        created_at: row.createdAt,
        online: 0,
        pending_since: row.pendingSince ?? null,
        enrolled_with: row.enrolledWith ?? null,
        enrol_key_hash: row.enrolKeyHash ?? null,
      })
      .onConflict((oc) => oc.columns(['workspace_id', 'name']).doNothing())
      .returningAll()
      .executeTakeFirst();
    return inserted;
  }

  async byName(workspaceId: number, name: string): Promise<AgentRow | undefined> {
    return await this.db
      .selectFrom('agents')
      .selectAll()
      .where('workspace_id', '=', workspaceId)
      .where('name', '=', name)
      .executeTakeFirst();
  }

  /** Agents of the workspace with these names (one query per thousand). */
  async byNames(workspaceId: number, names: readonly string[]): Promise<AgentRow[]> {
    const rows: AgentRow[] = [];
    for (const part of inChunks(names, IN_LIST_SIZE)) {
      rows.push(
        ...(await this.db
          .selectFrom('agents')
          .selectAll()
          .where('workspace_id', '=', workspaceId)
          .where('name', 'in', part)
          .execute()),
      );
    }
    return rows;
  }

  async list(workspaceId: number): Promise<AgentRow[]> {
    return await this.db
      .selectFrom('agents')
      .selectAll()
      .where('workspace_id', '=', workspaceId)
      .orderBy('name')
      .execute();
  }

  /** Points the agent at a new token (after `agent revoke` and re-create, say). */
  /** Clears an agent's wait for approval; false when it was not waiting. */
  async approve(id: number): Promise<boolean> {
    const r = await this.db
      .updateTable('agents')
      .set({ pending_since: null })
      .where('id', '=', id)
      .where('pending_since', 'is not', null)
      .executeTakeFirst();
    return r.numUpdatedRows > 0n;
  }

  async setToken(id: number, tokenId: string): Promise<void> {
    await this.db.updateTable('agents').set({ token_id: tokenId }).where('id', '=', id).execute();
  }

  /** Records what the agent reports and marks it online. */
  async recordObserved(id: number, observed: Observed, now: number): Promise<void> {
    await this.db.updateTable('agents').set(observedColumns(observed, now)).where('id', '=', id).execute();
  }

  /**
   * {@link recordObserved} for many agents in one statement (`UPDATE … FROM (VALUES …)`, which
   * SQLite and PostgreSQL both take); of two reports of one agent, the later one is recorded.
   */
  async recordObservedMany(items: ReadonlyArray<ObservedWrite>): Promise<void> {
    if (items.length === 1) {
      const o = items[0]!;
      return await this.recordObserved(o.id, o.observed, o.at);
    }
    const last = new Map<number, ObservedWrite>();
    for (const o of items) last.set(o.id, o);
    await sql`
      update agents set online = 1, last_seen_at = v.column2, store_path = v.column3,
        generation = v.column4, kind = v.column5, system = v.column6, hostname = v.column7,
        agent_version = v.column8, nix_version = v.column9, profile = v.column10
      from (values ${sql.join([...last.values()].map((o) => sql`(${observedValues(o)})`))}) as v
      where agents.id = v.column1`.execute(this.db);
  }

  /**
   * {@link setOffline} with an epoch for many agents in one statement: each only while that
   * connection is still its newest.
   */
  async setOfflineMany(items: ReadonlyArray<OfflineWrite>): Promise<void> {
    if (items.length === 1) {
      const o = items[0]!;
      return await this.setOffline(o.id, o.at, o.epoch);
    }
    const values = sql.join(
      items.map((o) => sql`(cast(${o.id} as integer), cast(${o.epoch} as integer), cast(${o.at} as bigint))`),
    );
    await sql`
      update agents set online = 0, last_seen_at = v.column3,
        offline_since = case when agents.online = 1 then v.column3 else coalesce(agents.offline_since, v.column3) end
      from (values ${values}) as v
      where agents.id = v.column1 and agents.connection_epoch = v.column2`.execute(this.db);
  }

  /**
   * Records a hello: what the agent reports, online, and the next connection epoch, which makes
   * this connection the agent's newest on every replica, and the replica holding it (replicas
   * sharing PostgreSQL; see replica-lease.ts). Returns the epoch.
   */
  async recordHello(id: number, observed: Observed, now: number, replicaId?: string): Promise<number> {
    const row = await this.db
      .updateTable('agents')
      .set((eb) => ({
        ...observedColumns(observed, now),
        connection_epoch: eb('connection_epoch', '+', 1),
        ...(replicaId === undefined ? {} : { replica_id: replicaId }),
      }))
      .where('id', '=', id)
      .returning('connection_epoch')
      .executeTakeFirst();
    return row?.connection_epoch ?? 0;
  }

  /**
   * {@link recordHello} for many hellos in as few statements as can be: one per run of distinct
   * agents (an agent saying hello twice gets two epochs, in order). Returns each hello's epoch.
   */
  async recordHelloMany(items: ReadonlyArray<HelloWrite>): Promise<number[]> {
    if (items.length === 1) {
      const h = items[0]!;
      return [await this.recordHello(h.id, h.observed, h.at, h.replicaId)];
    }
    const epochs: number[] = [];
    for (let i = 0; i < items.length; ) {
      const seen = new Set<number>();
      let end = i;
      while (end < items.length && !seen.has(items[end]!.id)) seen.add(items[end++]!.id);
      const run = items.slice(i, end);
      const values = sql.join(
        run.map((h) => sql`(${observedValues(h, sql`, cast(${h.replicaId ?? null} as text)`)})`),
      );
      const { rows } = await sql<{ id: number; connection_epoch: number }>`
        update agents set online = 1, last_seen_at = v.column2, store_path = v.column3,
          generation = v.column4, kind = v.column5, system = v.column6, hostname = v.column7,
          agent_version = v.column8, nix_version = v.column9, profile = v.column10,
          connection_epoch = agents.connection_epoch + 1,
          replica_id = coalesce(v.column11, agents.replica_id)
        from (values ${values}) as v
        where agents.id = v.column1
        returning agents.id, agents.connection_epoch`.execute(this.db);
      const byId = new Map(rows.map((r) => [Number(r.id), Number(r.connection_epoch)]));
      for (const h of run) epochs.push(byId.get(h.id) ?? 0);
      i = end;
    }
    return epochs;
  }

  /**
   * Marks the agent offline, keeping when it was last seen. With `epoch`, only while that
   * connection is still the agent's newest: a newer one (maybe on another replica) keeps it online.
   */
  async setOffline(id: number, now: number, epoch?: number): Promise<void> {
    let q = this.db
      .updateTable('agents')
      .set({ online: 0, last_seen_at: now, offline_since: offlineSince(now) })
      .where('id', '=', id);
    if (epoch !== undefined) q = q.where('connection_epoch', '=', epoch);
    await q.execute();
  }

  /** The connection epoch of each of these agents (one query per 1,000). */
  async connectionEpochs(ids: readonly number[]): Promise<Map<number, number>> {
    const out = new Map<number, number>();
    for (const part of inChunks(ids, IN_LIST_SIZE)) {
      const rows = await this.db
        .selectFrom('agents')
        .select(['id', 'connection_epoch'])
        .where('id', 'in', part)
        .execute();
      for (const r of rows) out.set(r.id, r.connection_epoch);
    }
    return out;
  }

  /**
   * Marks every agent offline: at start, no agent is connected to this server yet. Returns the
   * ids of those that were online, connected to the server before this one and reconnecting.
   */
  async setAllOffline(now: number): Promise<number[]> {
    const rows = await this.db
      .updateTable('agents')
      .set({ online: 0, offline_since: now })
      .where('online', '=', 1)
      .returning('id')
      .execute();
    return rows.map((r) => r.id);
  }

  /** Agents offline now that went offline at `since` or later. */
  async offlineSince(since: number): Promise<number[]> {
    const rows = await this.db
      .selectFrom('agents')
      .select('id')
      .where('online', '=', 0)
      .where('offline_since', '>=', since)
      .execute();
    return rows.map((r) => r.id);
  }

  /** The tags of these agents, by agent id (agents without tags are absent). */
  async tagsOf(agentIds: readonly number[]): Promise<Map<number, string[]>> {
    const out = new Map<number, string[]>();
    for (const part of inChunks([...new Set(agentIds)], IN_LIST_SIZE)) {
      const rows = await this.db
        .selectFrom('agent_tags')
        .select(['agent_id', 'tag'])
        .where('agent_id', 'in', part)
        .orderBy('tag')
        .execute();
      for (const r of rows) {
        const list = out.get(r.agent_id);
        if (list) list.push(r.tag);
        else out.set(r.agent_id, [r.tag]);
      }
    }
    return out;
  }

  /**
   * Adds and removes tags of one agent in one transaction and returns its tags after, sorted;
   * when the agent would end with more than `max` tags nothing changes and the answer is
   * `{ tooMany }`, the count it would have had.
   */
  async changeTags(
    agentId: number,
    change: { add: readonly string[]; remove: readonly string[]; max: number },
  ): Promise<string[] | { tooMany: number }> {
    const tooMany = new Error('too many tags');
    let count = 0;
    try {
      return await this.db.transaction().execute(async (trx) => {
        // A no-op write locks the agent's row (PostgreSQL; SQLite has one writer anyway), so
        // two changes at once cannot both pass the count and leave more than `max` tags.
        await trx
          .updateTable('agents')
          .set((eb) => ({ name: eb.ref('name') }))
          .where('id', '=', agentId)
          .execute();
        if (change.remove.length > 0) {
          await trx
            .deleteFrom('agent_tags')
            .where('agent_id', '=', agentId)
            .where('tag', 'in', [...change.remove])
            .execute();
        }
        const add = [...new Set(change.add)];
        if (add.length > 0) {
          await trx
            .insertInto('agent_tags')
            .values(add.map((tag) => ({ agent_id: agentId, tag })))
            .onConflict((oc) => oc.columns(['agent_id', 'tag']).doNothing())
            .execute();
        }
        const rows = await trx
          .selectFrom('agent_tags')
          .select('tag')
          .where('agent_id', '=', agentId)
          .orderBy('tag')
          .execute();
        count = rows.length;
        // Throwing rolls the transaction back: an over-full agent keeps the tags it had.
        if (count > change.max) throw tooMany;
        // Sorted here, not by the database, whose collation may order "a-b" and "ab" either way.
        return rows.map((r) => r.tag).sort();
      });
    } catch (err) {
      if (err === tooMany) return { tooMany: count };
      throw err;
    }
  }
}

function observedColumns(observed: Observed, now: number) {
  return {
    online: 1,
    last_seen_at: now,
    store_path: observed.storePath,
    generation: observed.generation,
    kind: observed.kind,
    system: observed.system,
    hostname: observed.hostname,
    agent_version: observed.agentVersion,
    nix_version: observed.nixVersion,
    profile: observed.profile,
  };
}

/** An agent's report of what it runs, as the write batch queues it. */
export interface ObservedWrite {
  readonly id: number;
  readonly observed: Observed;
  readonly at: number;
}

/** An agent's hello, as the write batch queues it. */
export interface HelloWrite extends ObservedWrite {
  /** The replica holding the connection (replicas sharing PostgreSQL). */
  readonly replicaId: string | undefined;
}

/** A connection of an agent that closed, as the write batch queues it. */
export interface OfflineWrite {
  readonly id: number;
  readonly epoch: number;
  readonly at: number;
}

function observedValues(o: ObservedWrite, extra: RawBuilder<unknown> = sql``): RawBuilder<unknown> {
  const b = o.observed;
  return sql`cast(${o.id} as integer), cast(${o.at} as bigint), cast(${b.storePath} as text),
    cast(${b.generation} as integer), cast(${b.kind} as text), cast(${b.system} as text),
    cast(${b.hostname} as text), cast(${b.agentVersion} as text), cast(${b.nixVersion} as text),
    cast(${b.profile} as text)${extra}`;
}

/** Reports of agents, written together when several are queued in a row. */
export const OBSERVED_WRITES: WriteGroup<ObservedWrite, void> = {
  runMany: async (db, items) => {
    await new AgentRepository(db).recordObservedMany(items);
    return items.map(() => undefined);
  },
  keysOf: (o) => [`agent:${o.id}`],
};

/** Agents' hellos (each resolving to the connection's epoch), written together. */
export const HELLO_WRITES: WriteGroup<HelloWrite, number> = {
  runMany: (db, items) => new AgentRepository(db).recordHelloMany(items),
  keysOf: (h) => [`agent:${h.id}`],
};

/** Agents' closed connections, written together when several are queued in a row. */
export const OFFLINE_WRITES: WriteGroup<OfflineWrite, void> = {
  runMany: async (db, items) => {
    await new AgentRepository(db).setOfflineMany(items);
    return items.map(() => undefined);
  },
  keysOf: (o) => [`agent:${o.id}`],
};

/**
 * `offline_since` for an agent being marked offline at `now`: `now` if it was online, else when
 * it went offline before (a second close of the same connection does not restart the grace
 * period of its `agent.offline` webhook).
 */
function offlineSince(now: number) {
  return sql<number>`case when online = 1 then cast(${now} as bigint) else coalesce(offline_since, cast(${now} as bigint)) end`;
}
