import type { Kysely } from 'kysely';
import type { Database } from './database-schema.ts';
import { IN_LIST_SIZE, inChunks } from './in-chunks.ts';

/** What a sweep found: the dead replicas whose leases it removed, and the agents it marked offline. */
export interface SweepResult {
  readonly replicas: string[];
  readonly agents: number[];
}

/** Stores the replicas' leases (migration 12): which replicas are alive, and so whose agents are. */
export class ReplicaLeaseRepository {
  constructor(private readonly db: Kysely<Database>) {}

  /**
   * Extends the replica's lease to `expiresAt`. False when it holds no lease row: it never had
   * one, or another replica found it expired and swept its agents (the caller then takes a new
   * one with {@link take}).
   */
  async renew(replicaId: string, expiresAt: number): Promise<boolean> {
    const row = await this.db
      .updateTable('replica_leases')
      .set({ expires_at: expiresAt })
      .where('replica_id', '=', replicaId)
      .returning('replica_id')
      .executeTakeFirst();
    return row !== undefined;
  }

  /** Takes a lease row for the replica. */
  async take(replicaId: string, now: number, expiresAt: number): Promise<void> {
    await this.db
      .insertInto('replica_leases')
      .values({ replica_id: replicaId, started_at: now, expires_at: expiresAt })
      .onConflict((oc) => oc.column('replica_id').doUpdateSet({ expires_at: expiresAt }))
      .execute();
  }

  /** Gives the lease up (a replica stopping cleanly, which marked its own agents offline). */
  async release(replicaId: string): Promise<void> {
    await this.db.deleteFrom('replica_leases').where('replica_id', '=', replicaId).execute();
  }

  /**
   * Marks offline the agents held by replicas whose lease expired before `now`, and removes
   * those leases, in one transaction. On PostgreSQL the expired rows are taken `FOR UPDATE SKIP
   * LOCKED`: two replicas sweeping at once split the dead replicas between them, and a replica
   * renewing its lease at that moment waits for the sweep, then finds its row gone (see
   * {@link renew}). An agent that said hello to a live replica meanwhile holds that replica's id
   * and is left alone.
   */
  async sweepExpired(now: number, options: { lockRows: boolean; except?: string }): Promise<SweepResult> {
    return await this.db.transaction().execute(async (trx) => {
      let q = trx.selectFrom('replica_leases').select('replica_id').where('expires_at', '<', now);
      if (options.except !== undefined) q = q.where('replica_id', '<>', options.except);
      if (options.lockRows) q = q.forUpdate().skipLocked();
      const replicas = (await q.execute()).map((r) => r.replica_id);
      if (replicas.length === 0) return { replicas, agents: [] };
      const agents = await trx
        .updateTable('agents')
        .set({ online: 0, offline_since: now })
        .where('online', '=', 1)
        .where('replica_id', 'in', replicas)
        .returning('id')
        .execute();
      await trx.deleteFrom('replica_leases').where('replica_id', 'in', replicas).execute();
      return { replicas, agents: agents.map((a) => a.id) };
    });
  }

  /**
   * Marks online again the agents of `agentIds` whose row still names this replica (after a
   * sweep took its lease): an agent that said hello to another replica meanwhile is that
   * replica's, and is left alone. Returns the ids marked (one statement per 1,000).
   */
  async reclaim(replicaId: string, agentIds: readonly number[]): Promise<number[]> {
    const out: number[] = [];
    for (const part of inChunks(agentIds, IN_LIST_SIZE)) {
      const rows = await this.db
        .updateTable('agents')
        .set({ online: 1 })
        .where('replica_id', '=', replicaId)
        .where('id', 'in', part)
        .returning('id')
        .execute();
      out.push(...rows.map((r) => r.id));
    }
    return out;
  }
}
