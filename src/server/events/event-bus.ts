import { EventEmitter } from 'node:events';
import type { Selectable } from 'kysely';
import type { DeploymentState } from '../../protocol/deployment-state.ts';
import type { DeploymentsTable } from '../db/database-schema.ts';

/** Something that happened to a deployment: a state change or a step. */
export interface DeploymentEvent {
  readonly workspaceId: number;
  readonly rolloutId: number;
  readonly deploymentId: number;
  readonly agent: string;
  readonly state: DeploymentState;
  readonly step: string | null;
  readonly reason: string | null;
}

/**
 * Log lines of a deployment, numbered. Lines written by another replica arrive as a doorbell
 * with no lines (and no agent name): followers read the lines after their last one from the
 * database.
 */
export interface LogEvent {
  readonly rolloutId: number;
  readonly deploymentId: number;
  readonly agent: string;
  readonly lines: ReadonlyArray<{ seq: number; t: number; text: string }>;
}

/** The events that cross the server's parts (and, with several replicas, the replicas). */
export interface BusEvents {
  deployment: DeploymentEvent;
  log: LogEvent;
  /**
   * An agent's desired state changed: tell it, if it is connected here. `deployment`, when
   * present, is what it should now run (null: nothing), already looked up: a rollout to 10,000
   * agents then costs one query, not one per agent.
   */
  desired: { readonly agentId: number; readonly deployment?: Selectable<DeploymentsTable> | null };
  /** A staged rollout changed (state, batch, why it waits): readers query the database. */
  rollout: { readonly workspaceId: number; readonly rolloutId: number };
  /** An agent connected and said hello: a deferred deployment may now be its due. */
  'agent-online': { readonly agentId: number };
  /**
   * A connection of the agent said hello and took connection epoch `epoch`: a replica holding an
   * older connection of the same agent closes it ("replaced by a newer connection").
   */
  'agent-connected': { readonly agentId: number; readonly epoch: number };
  /**
   * A cache's signing keys changed (rotated, retired): forget its narinfos as signed so far, and
   * tell the workspace's agents the key they are to trust.
   */
  'cache-keys': { readonly workspaceId: number; readonly cache: string };
  /**
   * The collector removed narinfos of a cache: forget those held in memory. `local` is true on
   * the replica that collected, which forgot exactly the removed ones already.
   */
  'cache-changed': { readonly cacheId: number; readonly local: boolean };
  /**
   * A plan asks the machine of an agent this replica does not hold (`plan_requests` row
   * `requestId`): the replica holding it asks, writes the answer and publishes `plan-answered`.
   */
  'plan-asked': { readonly requestId: string; readonly agentId: number };
  /** The answer to plan request `requestId` is in its row. */
  'plan-answered': { readonly requestId: string };
  /** A token was revoked: close its connections at once. */
  'token-revoked': { readonly tokenId: string };
  /**
   * Events may have been missed (the replicas' listener connected again, or the backstop timer
   * fired), or too many agents changed to name them: re-read from the database what is held in
   * memory (every connected agent's desired state, every followed deployment). Never sent by the
   * in-process bus, which cannot lose events.
   */
  resync: { readonly reason: 'connected' | 'backstop' | 'fan-out' };
}

/**
 * Publish/subscribe between the server's parts. One process uses this in-memory bus; replicas
 * sharing PostgreSQL relay the same events through LISTEN/NOTIFY behind the same interface.
 */
export interface EventBus {
  publish<K extends keyof BusEvents>(type: K, event: BusEvents[K]): void;
  /** Subscribes; returns the function that unsubscribes. */
  subscribe<K extends keyof BusEvents>(type: K, listener: (event: BusEvents[K]) => void): () => void;
}

/** The in-process {@link EventBus}. */
export class LocalEventBus implements EventBus {
  readonly #emitter = new EventEmitter();

  constructor() {
    // One listener per open event stream: many are normal.
    this.#emitter.setMaxListeners(0);
  }

  publish<K extends keyof BusEvents>(type: K, event: BusEvents[K]): void {
    this.#emitter.emit(type, event);
  }

  subscribe<K extends keyof BusEvents>(type: K, listener: (event: BusEvents[K]) => void): () => void {
    this.#emitter.on(type, listener);
    return () => this.#emitter.off(type, listener);
  }
}
