import type { AgentJournal } from '../protocol/agent-journal.ts';
import type { DeploymentStep, DesiredDeployment } from '../protocol/agent-protocol.ts';

/** The deployment the agent is running, and its latest step (said again on every reconnect). */
export interface RunningDeployment {
  readonly id: string;
  step: DeploymentStep | null;
}

/** Runs one deployment to its end; `resume` is the journal of one a previous process started. */
export type DeploymentJob = (
  d: DesiredDeployment,
  running: RunningDeployment,
  resume: AgentJournal | undefined,
) => Promise<void>;

/**
 * The deployments the agent is told to run, one at a time: the server's latest desire waits
 * behind the running one (a newer desire replaces it), and a deployment already finished is
 * never run again.
 */
export class DeploymentQueue {
  readonly #job: DeploymentJob;
  readonly #stopping: () => boolean;
  #running: (RunningDeployment & { done: Promise<void> }) | undefined;
  #next: DesiredDeployment | null = null;
  /** Deployments this agent has finished (or found finished in its journal). */
  readonly finished = new Set<string>();

  /** `stopping` says the agent is stopping: the queued deployment then waits for the next start. */
  constructor(job: DeploymentJob, options: { stopping: () => boolean }) {
    this.#job = job;
    this.#stopping = options.stopping;
  }

  /** The deployment running now, if any. */
  get running(): RunningDeployment | undefined {
    return this.#running;
  }

  /** The server says what to run: start it, or queue it behind the running one. */
  desire(desired: DesiredDeployment | null): void {
    if (!desired) {
      this.#next = null;
      return;
    }
    if (desired.id === this.#running?.id || this.finished.has(desired.id)) return;
    if (this.#running) {
      this.#next = desired;
      return;
    }
    this.start(desired);
  }

  /** The server says not to start this deployment (superseded or cancelled). */
  cancel(deploymentId: string): void {
    if (this.#next?.id === deploymentId) this.#next = null;
  }

  /** Starts a deployment now (nothing may be running), resuming it from `resume` if given. */
  start(d: DesiredDeployment, resume?: AgentJournal): void {
    // Recorded before the deployment starts: a resumed one reports its first step at once.
    const running = { id: d.id, step: null, done: Promise.resolve() };
    this.#running = running;
    running.done = this.#job(d, running, resume);
    void running.done.finally(() => {
      this.#running = undefined;
      const next = this.#next;
      this.#next = null;
      if (next && !this.finished.has(next.id) && !this.#stopping()) this.start(next);
    });
  }

  /** Resolves once the running deployment, if any, has ended. */
  async idle(): Promise<void> {
    await this.#running?.done;
  }
}
