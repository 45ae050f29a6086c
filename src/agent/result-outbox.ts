import { type JournalOwner, sameServer } from '../protocol/agent-journal.ts';
import type { AgentMessage, DeploymentResult, Observed } from '../protocol/agent-protocol.ts';

/** What a {@link ResultOutbox} needs. */
export interface ResultOutboxOptions {
  /** Sends on the current connection; false when there is none. */
  readonly send: (msg: AgentMessage) => boolean;
  /** The machine's state, sent with each result. */
  readonly observe: () => Promise<Observed>;
  /** The server of `owner` has these results: the real agent marks its journal reported. */
  readonly onAcknowledged?: (deploymentIds: ReadonlySet<string>, owner: JournalOwner) => void;
}

/** A result and the server, workspace and agent whose deployment it ends. */
interface Entry {
  readonly result: DeploymentResult;
  readonly owner: JournalOwner;
}

/**
 * Deployment results on their way to the server, kept until it shows it has them: a result is
 * acknowledged by the next `welcome` or `desired` on the connection it went out on, and a
 * connection that closes first sends it again on the next one (the server takes a result twice
 * without harm, but never not at all). Each result carries its owner and goes only to that
 * server and workspace (deployment ids are per server), so results go only after a `welcome` has
 * said which server this connection reached, never in `hello` (the server behind the URL may have
 * changed since the last connection); a result of another server waits for that server.
 */
export class ResultOutbox {
  readonly #o: ResultOutboxOptions;
  /** Results for the next connection. */
  #unreported: Entry[] = [];
  /** Results sent on the current connection that the server has not yet shown it has. */
  readonly #awaitingAck = new Map<string, Entry>();
  /** The server and workspace of the latest welcome; undefined before the first. */
  #server: JournalOwner | undefined;

  constructor(options: ResultOutboxOptions) {
    this.#o = options;
  }

  /** Keeps a result of `owner`'s for the next connection (one found in the journal at start). */
  add(result: DeploymentResult, owner: JournalOwner): void {
    this.#unreported.push({ result, owner });
  }

  /** Whether a result of `owner`'s goes to the server of the latest welcome. */
  #forThisServer(owner: JournalOwner): boolean {
    return (
      this.#server !== undefined && sameServer(owner, this.#server) && owner.agent === this.#server.agent
    );
  }

  /** Sends a result of `owner`'s now; false when there is no connection to its server (it waits). */
  async report(result: DeploymentResult, owner: JournalOwner): Promise<boolean> {
    const entry = { result, owner };
    const delivered =
      this.#forThisServer(owner) &&
      this.#o.send({ type: 'result', result, observed: await this.#o.observe() });
    if (delivered) this.#awaitingAck.set(result.deploymentId, entry);
    else this.#unreported.push(entry);
    return delivered;
  }

  /** A server welcomed the agent: results of its own are sent from now on (see {@link resend}). */
  welcomed(server: JournalOwner): void {
    this.#server = server;
  }

  /** Sends the results of the welcoming server, after whatever was sent before this call. */
  async resend(): Promise<void> {
    if (!this.#unreported.some((e) => this.#forThisServer(e.owner))) return;
    const observed = await this.#o.observe();
    const waiting = this.#unreported.splice(0);
    for (const e of waiting) {
      if (this.#forThisServer(e.owner) && this.#o.send({ type: 'result', result: e.result, observed }))
        this.#awaitingAck.set(e.result.deploymentId, e);
      else this.#unreported.push(e);
    }
  }

  /** The server has everything sent before: results need not be sent again. */
  acknowledged(): void {
    if (this.#awaitingAck.size === 0 || !this.#server) return;
    const ids = new Set(this.#awaitingAck.keys());
    this.#awaitingAck.clear();
    this.#o.onAcknowledged?.(ids, this.#server);
  }

  /**
   * The connection closed: results the server may not have processed go again once the next
   * connection is welcomed (which may be another server's).
   */
  connectionLost(): void {
    this.#server = undefined;
    for (const e of this.#awaitingAck.values())
      if (
        !this.#unreported.some(
          (u) => u.result.deploymentId === e.result.deploymentId && sameServer(u.owner, e.owner),
        )
      )
        this.#unreported.push(e);
    this.#awaitingAck.clear();
  }
}
