import type { Logger } from 'pino';
import type { DeploymentRepository } from '../db/deployment-repository.ts';
import type { WriteBatch } from '../db/write-batch.ts';
import type { EventBus } from '../events/event-bus.ts';
import type { ServerMetrics } from '../metrics/server-metrics.ts';
import type { AgentCaches } from './agent-caches.ts';
import type { DesiredLookup } from './desired-lookup.ts';
import type { ClosureSink } from './handle-closure.ts';
import type { LogWriter } from './log-writer.ts';
import type { ServerIdentity } from './server-identity.ts';

/** What the handlers of agent messages use; the hub builds one and shares it with every connection. */
export interface AgentMessageContext {
  readonly bus: EventBus;
  /** Where the agents' small writes are grouped into transactions. */
  readonly writes: WriteBatch;
  readonly logs: LogWriter;
  readonly log: Logger;
  readonly now: () => number;
  readonly deployments: Pick<DeploymentRepository, 'byId'>;
  /** Records reported closures; without it they are ignored. */
  readonly closures: ClosureSink | undefined;
  /** The URL agents reach the server at, given the one the agent's own request used. */
  readonly baseUrl: (requestBase: string) => string;
  readonly desired: DesiredLookup;
  readonly caches: AgentCaches;
  /** The server's id and the workspaces' names, told to agents in `welcome`. */
  readonly identity: ServerIdentity;
  /** This replica's id, recorded with each hello (replicas sharing PostgreSQL; see replica-lease.ts). */
  readonly replicaId?: string | undefined;
  /** Tells the agent's current connection, if it has said hello, what it should run now. */
  readonly sendDesired: (agentId: number) => Promise<void>;
  /** Where deployment durations are recorded; none in tests that build a hub alone. */
  readonly metrics?: Pick<ServerMetrics, 'deploymentDuration'> | undefined;
  /** Says a deployment's result is being recorded: a desired state looked up before is not sent. */
  readonly finishing: (deploymentId: number) => void;
}
