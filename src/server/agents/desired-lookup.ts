import type { Selectable } from 'kysely';
import { BatchedLookup } from '../db/batched-lookup.ts';
import type { DeploymentsTable } from '../db/database-schema.ts';
import type { DeploymentRepository } from '../db/deployment-repository.ts';

type DesiredRow = Selectable<DeploymentsTable>;

/**
 * Looks up what agents should run, batched: every agent asking in the same turn of the event
 * loop is looked up with one query, so a thousand agents reporting results at once cost one
 * query instead of a thousand.
 */
export class DesiredLookup {
  readonly #lookup: BatchedLookup<number, DesiredRow>;

  constructor(deployments: Pick<DeploymentRepository, 'desiredForMany'>) {
    this.#lookup = new BatchedLookup((ids) => deployments.desiredForMany(ids));
  }

  /** The deployment the agent should run now, or undefined when it has nothing to do. */
  of(agentId: number): Promise<DesiredRow | undefined> {
    return this.#lookup.get(agentId);
  }
}
