import type { Selectable } from 'kysely';
import type { DeploymentsTable } from '../db/database-schema.ts';
import type { DeploymentRepository } from '../db/deployment-repository.ts';

type DesiredRow = Selectable<DeploymentsTable>;

/** An agent's lookup waiting for the batch. */
interface Waiter {
  readonly resolve: (row: DesiredRow | undefined) => void;
  readonly reject: (err: unknown) => void;
}

/**
 * Looks up what agents should run, batched: every agent asking in the same turn of the event
 * loop is looked up with one query, so a thousand agents reporting results at once cost one
 * query instead of a thousand.
 */
export class DesiredLookup {
  readonly #deployments: Pick<DeploymentRepository, 'desiredForMany'>;
  /** Agents to look up in the next batch, with who waits for each. */
  #wanted = new Map<number, Waiter[]>();
  #timer: NodeJS.Immediate | undefined;

  constructor(deployments: Pick<DeploymentRepository, 'desiredForMany'>) {
    this.#deployments = deployments;
  }

  /** The deployment the agent should run now, or undefined when it has nothing to do. */
  of(agentId: number): Promise<DesiredRow | undefined> {
    return new Promise((resolve, reject) => {
      const waiter = { resolve, reject };
      const waiting = this.#wanted.get(agentId);
      if (waiting) waiting.push(waiter);
      else this.#wanted.set(agentId, [waiter]);
      this.#timer ??= setImmediate(() => {
        this.#timer = undefined;
        const wanted = this.#wanted;
        this.#wanted = new Map();
        this.#deployments.desiredForMany([...wanted.keys()]).then(
          (rows) => {
            for (const [id, waiters] of wanted) for (const w of waiters) w.resolve(rows.get(id));
          },
          // Every waiter, each with its own reject: one left pending would stall its agent's messages.
          (err) => {
            for (const waiters of wanted.values()) for (const w of waiters) w.reject(err);
          },
        );
      });
    });
  }
}
