import type { AgentMessage, DeploymentResult, Observed } from '../protocol/agent-protocol.ts';

/** What a {@link ResultOutbox} needs. */
export interface ResultOutboxOptions {
  /** Sends on the current connection; false when there is none. */
  readonly send: (msg: AgentMessage) => boolean;
  /** The machine's state, sent with each result. */
  readonly observe: () => Promise<Observed>;
  /** The server has these results: the real agent marks its journal reported. */
  readonly onAcknowledged?: (deploymentIds: ReadonlySet<string>) => void;
}

/** Results hello may carry at once (the protocol's limit). */
const MAX_HELLO_RESULTS = 100;

/**
 * Deployment results on their way to the server, kept until it shows it has them: a result is
 * acknowledged by the next `welcome` or `desired` on the connection it went out on, and a
 * connection that closes first sends it again on the next one (the server takes a result twice
 * without harm, but never not at all).
 */
export class ResultOutbox {
  readonly #o: ResultOutboxOptions;
  /** Results for the next connection. */
  #unreported: DeploymentResult[] = [];
  /** Results sent on the current connection that the server has not yet shown it has. */
  readonly #awaitingAck = new Map<string, DeploymentResult>();

  constructor(options: ResultOutboxOptions) {
    this.#o = options;
  }

  /** Keeps a result for the next connection (one found in the journal at start). */
  add(result: DeploymentResult): void {
    this.#unreported.push(result);
  }

  /**
   * The results a hello carries: those whose log lines are no longer held (`held`), as the
   * server finishes a deployment on its result and followers stop reading its log there.
   */
  forHello(held: (deploymentId: string) => boolean): DeploymentResult[] {
    const carried = this.#unreported.filter((r) => !held(r.deploymentId)).slice(0, MAX_HELLO_RESULTS);
    this.#unreported = this.#unreported.filter((r) => !carried.includes(r));
    for (const r of carried) this.#awaitingAck.set(r.deploymentId, r);
    return carried;
  }

  /** Sends a result now; false when there is no connection (it goes with the next one). */
  async report(result: DeploymentResult): Promise<boolean> {
    const delivered = this.#o.send({ type: 'result', result, observed: await this.#o.observe() });
    if (delivered) this.#awaitingAck.set(result.deploymentId, result);
    else this.#unreported.push(result);
    return delivered;
  }

  /** Sends the results hello did not carry, after whatever was sent before this call. */
  async resend(): Promise<void> {
    if (this.#unreported.length === 0) return;
    const observed = await this.#o.observe();
    for (const result of this.#unreported.splice(0)) {
      if (this.#o.send({ type: 'result', result, observed }))
        this.#awaitingAck.set(result.deploymentId, result);
      else this.#unreported.push(result);
    }
  }

  /** The server has everything sent before: results need not be sent again. */
  acknowledged(): void {
    if (this.#awaitingAck.size === 0) return;
    const ids = new Set(this.#awaitingAck.keys());
    this.#awaitingAck.clear();
    this.#o.onAcknowledged?.(ids);
  }

  /** The connection closed: results the server may not have processed go again with the next hello. */
  connectionLost(): void {
    for (const r of this.#awaitingAck.values())
      if (!this.#unreported.some((u) => u.deploymentId === r.deploymentId)) this.#unreported.push(r);
    this.#awaitingAck.clear();
  }
}
