import type { AgentJournal, JournalOwner } from '../protocol/agent-journal.ts';
import type { DeploymentResult, DeploymentStep, DesiredDeployment } from '../protocol/agent-protocol.ts';

/** The deployment the agent is running, whose it is, and its latest step (said again on every reconnect). */
export interface RunningDeployment {
  readonly id: string;
  /** The server, workspace and agent that asked for it. */
  readonly owner: JournalOwner;
  step: DeploymentStep | null;
}

/** Runs one deployment to its end; `resume` is the journal of one a previous process started. */
export type DeploymentJob = (
  d: DesiredDeployment,
  running: RunningDeployment,
  resume: AgentJournal | undefined,
) => Promise<void>;

/** Deployment ids are per server and workspace: this names one deployment across servers. */
function key(owner: JournalOwner, id: string): string {
  return JSON.stringify([owner.serverId, owner.workspace, owner.agent, id]);
}

/**
 * The deployments the agent is told to run, one at a time: the server's latest desire waits
 * behind the running one (a newer desire replaces it), and a deployment already finished is
 * never run again. A deployment is known by its id *and* its owner, so that another server's
 * deployment with the same id is a different one.
 */
export class DeploymentQueue {
  readonly #job: DeploymentJob;
  readonly #stopping: () => boolean;
  #running: (RunningDeployment & { done: Promise<void> }) | undefined;
  #next: { d: DesiredDeployment; owner: JournalOwner } | null = null;
  /** Deployments this agent has finished (or found finished in its journal), with the result when known. */
  readonly #finished = new Map<string, DeploymentResult | undefined>();
  readonly #onDesiredAgain: ((result: DeploymentResult, owner: JournalOwner) => void) | undefined;

  /**
   * `stopping` says the agent is stopping: the queued deployment then waits for the next start.
   * `onDesiredAgain` is told when the server asks again for a deployment this agent finished: the
   * server lacks its result (such as a server restored from a backup taken before it arrived).
   */
  constructor(
    job: DeploymentJob,
    options: {
      stopping: () => boolean;
      onDesiredAgain?: (result: DeploymentResult, owner: JournalOwner) => void;
    },
  ) {
    this.#job = job;
    this.#stopping = options.stopping;
    this.#onDesiredAgain = options.onDesiredAgain;
  }

  /** The deployment running now, if any. */
  get running(): RunningDeployment | undefined {
    return this.#running;
  }

  /** Records a deployment as finished, with its result when known: it is never run again. */
  finish(owner: JournalOwner, deploymentId: string, result?: DeploymentResult): void {
    this.#finished.set(key(owner, deploymentId), result);
  }

  /** The server of `owner` says what to run: start it, or queue it behind the running one. */
  desire(desired: DesiredDeployment | null, owner: JournalOwner): void {
    if (!desired) {
      this.#next = null;
      return;
    }
    const k = key(owner, desired.id);
    if (this.#running && key(this.#running.owner, this.#running.id) === k) return;
    if (this.#finished.has(k)) {
      const result = this.#finished.get(k);
      if (result) this.#onDesiredAgain?.(result, owner);
      return;
    }
    if (this.#running) {
      this.#next = { d: desired, owner };
      return;
    }
    this.start(desired, owner);
  }

  /** The server says not to start this deployment (superseded or cancelled). */
  cancel(deploymentId: string): void {
    if (this.#next?.d.id === deploymentId) this.#next = null;
  }

  /** Starts a deployment of `owner`'s now (nothing may be running), resuming it from `resume` if given. */
  start(d: DesiredDeployment, owner: JournalOwner, resume?: AgentJournal): void {
    // Recorded before the deployment starts: a resumed one reports its first step at once.
    const running = { id: d.id, owner, step: null, done: Promise.resolve() };
    this.#running = running;
    running.done = this.#job(d, running, resume);
    void running.done.finally(() => {
      this.#running = undefined;
      const next = this.#next;
      this.#next = null;
      if (next && !this.#finished.has(key(next.owner, next.d.id)) && !this.#stopping())
        this.start(next.d, next.owner);
    });
  }

  /** Resolves once the running deployment, if any, has ended. */
  async idle(): Promise<void> {
    await this.#running?.done;
  }
}
