import { isOpenState } from '../../protocol/deployment-state.ts';
import type { DeploymentRepository } from '../db/deployment-repository.ts';

/** What the hub remembers of a deployment it told an agent about. */
export interface KnownDeployment {
  readonly id: number;
  readonly rolloutId: number;
  readonly workspaceId: number;
  readonly storePath: string;
  state: string;
  /** When the agent began it (its first step): the start of `cairn_deployment_duration_seconds`. */
  startedAt: number | null;
}

/** The columns of a deployment row that are remembered. */
interface DeploymentColumns {
  readonly id: number;
  readonly rollout_id: number;
  readonly workspace_id: number;
  readonly store_path: string;
  readonly state: string;
  readonly started_at?: number | null;
}

/** Remembered at most per agent: an agent runs one deployment at a time. */
const REMEMBERED = 8;

/**
 * The open deployments one agent was told about (or that were looked up for it), by id: the
 * messages of a running deployment find it here instead of in the database.
 */
export class KnownDeployments {
  readonly #agent: { readonly id: number; readonly workspace_id: number };
  readonly #deployments: Pick<DeploymentRepository, 'byId'>;
  readonly #byId = new Map<number, KnownDeployment>();

  constructor(
    agent: { readonly id: number; readonly workspace_id: number },
    deployments: Pick<DeploymentRepository, 'byId'>,
  ) {
    this.#agent = agent;
    this.#deployments = deployments;
  }

  /** A deployment of this agent, from what it was told or else from the database. */
  async find(deploymentId: string): Promise<KnownDeployment | undefined> {
    const id = Number(deploymentId);
    const cached = this.#byId.get(id);
    if (cached) return cached;
    const d = await this.#deployments.byId(this.#agent.workspace_id, id);
    if (!d || d.agent_id !== this.#agent.id) return undefined;
    return this.remember(d);
  }

  /** Remembers a deployment if it is still open; returns what is known of it either way. */
  remember(d: DeploymentColumns): KnownDeployment {
    const k: KnownDeployment = {
      id: d.id,
      rolloutId: d.rollout_id,
      workspaceId: d.workspace_id,
      storePath: d.store_path,
      state: d.state,
      startedAt: d.started_at === undefined || d.started_at === null ? null : Number(d.started_at),
    };
    if (isOpenState(d.state)) {
      if (this.#byId.size >= REMEMBERED) this.#byId.delete(this.#byId.keys().next().value!);
      this.#byId.set(d.id, k);
    }
    return k;
  }

  /** Forgets a deployment that is over. */
  forget(id: number): void {
    this.#byId.delete(id);
  }
}
