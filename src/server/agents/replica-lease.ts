import type { Kysely } from 'kysely';
import type { Logger } from 'pino';
import type { Database } from '../db/database-schema.ts';
import type { SqlDialect } from '../db/migrations.ts';
import { ReplicaLeaseRepository } from '../db/replica-lease-repository.ts';

/**
 * How long a replica's lease lasts without renewal: after it, its agents are marked offline. A
 * minute, not less: a replica busy with a fleet's reconnect storm on a small machine was seen to
 * go more than 20 s between two renewals (bench:fleet --replicas 2, 10,000 agents on two cores).
 */
export const REPLICA_LEASE_MS = 60_000;

/** What {@link ReplicaLease} needs. */
export interface ReplicaLeaseOptions {
  readonly db: Kysely<Database>;
  /** This replica's id, recorded in the rows of the agents it holds. */
  readonly replicaId: string;
  readonly log: Logger;
  readonly now: () => number;
  /** The lease's length; it is renewed (and others' swept) four times per length. */
  readonly leaseMs?: number;
  /** The agents this replica holds a connection of (said hello here and not gone since). */
  readonly held: () => readonly number[];
  /**
   * Called when this replica found its lease taken away (it stalled longer than the lease, and
   * another replica marked its agents offline) and recorded online again those of its agents
   * that no other replica holds meanwhile: their ids, so that what waits for them to be online
   * (the rollout engine's deferred dispatch) hears it. The connections stay open: closing them
   * would turn one replica's stall into a reconnect storm of all its agents.
   */
  readonly onReclaimed: (agentIds: readonly number[]) => void;
  /** On PostgreSQL, dead replicas' rows are claimed `FOR UPDATE SKIP LOCKED`; SQLite has one writer. */
  readonly dialect: SqlDialect;
}

/**
 * The lease that says a replica sharing PostgreSQL is alive, and the sweep that marks offline
 * the agents of one that is not. Each replica renews its own lease row every quarter lease and,
 * in the same round, sweeps the expired ones; no leader, since the sweep claims each dead
 * replica's row with `FOR UPDATE SKIP LOCKED`. The rollout engine reads `online` from the rows
 * at each tick, so an agent swept offline counts as offline there (its `offline` policy) with
 * nothing more to tell.
 */
export class ReplicaLease {
  readonly #o: ReplicaLeaseOptions;
  readonly #leases: ReplicaLeaseRepository;
  readonly #leaseMs: number;
  #timer: NodeJS.Timeout | undefined;
  #round: Promise<void> = Promise.resolve();
  #stopped = false;

  constructor(options: ReplicaLeaseOptions) {
    this.#o = options;
    this.#leases = new ReplicaLeaseRepository(options.db);
    this.#leaseMs = options.leaseMs ?? REPLICA_LEASE_MS;
  }

  /** Takes the lease (rejects if the database cannot be written), then renews and sweeps on a timer. */
  async start(): Promise<void> {
    const now = this.#o.now();
    await this.#leases.take(this.#o.replicaId, now, now + this.#leaseMs);
    this.#schedule();
  }

  #schedule(): void {
    this.#timer = setTimeout(() => {
      this.#round = this.renewAndSweep().finally(() => {
        if (!this.#stopped) this.#schedule();
      });
    }, this.#leaseMs / 4);
    this.#timer.unref();
  }

  /** One round, as the timer runs it: renews this replica's lease, then sweeps the expired ones. */
  async renewAndSweep(): Promise<void> {
    const { replicaId, log } = this.#o;
    try {
      const now = this.#o.now();
      if (!(await this.#leases.renew(replicaId, now + this.#leaseMs))) {
        await this.#leases.take(replicaId, now, now + this.#leaseMs);
        const reclaimed = await this.#leases.reclaim(replicaId, this.#o.held());
        log.warn(
          { replica: replicaId, agents: reclaimed.length },
          'this replica lost its lease (it stalled longer than the lease); its agents are recorded online again',
        );
        this.#o.onReclaimed(reclaimed);
      }
    } catch (err) {
      log.warn({ err }, 'cannot renew this replica’s lease; trying again');
    }
    try {
      const swept = await this.#leases.sweepExpired(this.#o.now(), {
        lockRows: this.#o.dialect === 'postgres',
        // A replica running its sweep is alive, whatever its clock says of its own lease.
        except: replicaId,
      });
      if (swept.replicas.length > 0) {
        log.info(
          { replicas: swept.replicas, agents: swept.agents.length },
          'marked offline the agents of replicas whose lease expired',
        );
      }
    } catch (err) {
      log.warn({ err }, 'cannot sweep the expired replica leases; trying again');
    }
  }

  /** Stops renewing and gives the lease up (the replica marked its own agents offline as it closed). */
  async close(): Promise<void> {
    this.#stopped = true;
    if (this.#timer) clearTimeout(this.#timer);
    await this.#round;
    await this.#leases
      .release(this.#o.replicaId)
      .catch((err) => this.#o.log.warn({ err }, 'cannot give the replica lease up'));
  }
}
