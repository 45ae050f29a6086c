import type { AgentConnection } from './agent-connection.ts';

/**
 * Connectivity confirmation after a switch: the agent drops its connection, reconnects (a new
 * connection proves the new configuration can reach the server; the old one does not, nor does
 * one whose TCP handshake may have happened before the switch), says `confirm` once welcomed,
 * and waits for `confirmed`. Call {@link onWelcome} and {@link onConfirmed} from the message handler.
 */
export class Confirmation {
  readonly #connection: Pick<AgentConnection, 'send' | 'restart' | 'hurry'>;
  readonly #beforeDrop: () => Promise<void>;
  #pending: { id: string; resolve: (ok: boolean) => void } | undefined;

  /**
   * `beforeDrop` runs before the old connection is dropped (the real agent sends the lines just
   * logged and waits briefly for the server to show it read them).
   */
  constructor(
    connection: Pick<AgentConnection, 'send' | 'restart' | 'hurry'>,
    options: { beforeDrop?: () => Promise<void> } = {},
  ) {
    this.#connection = connection;
    this.#beforeDrop = options.beforeDrop ?? (() => Promise.resolve());
  }

  /** The deployment waiting for the server's confirmation, if any. */
  get pending(): string | undefined {
    return this.#pending?.id;
  }

  /**
   * Opens a new connection and resolves true once the server confirms the deployment over it,
   * or false when that did not happen within `timeoutMs`.
   */
  confirm(deploymentId: string, timeoutMs: number): Promise<boolean> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => done(false), timeoutMs);
      const done = (ok: boolean) => {
        clearTimeout(timer);
        if (this.#pending?.id === deploymentId) {
          this.#pending = undefined;
          this.#connection.hurry(false);
        }
        resolve(ok);
      };
      this.#pending = { id: deploymentId, resolve: done };
      this.#connection.hurry(true);
      this.#connection.restart(this.#beforeDrop);
    });
  }

  /**
   * A connection was welcomed: ask it to confirm the pending deployment. When the pending
   * deployment is another server's (`ownServer` false: a journal's, resumed after the agent was
   * pointed elsewhere), this server cannot confirm it, but reaching a server over a new connection
   * proves the connectivity the check is for: it counts as confirmed, and nothing is sent.
   */
  onWelcome(ownServer = true): void {
    if (!this.#pending) return;
    if (ownServer) this.#connection.send({ type: 'confirm', deploymentId: this.#pending.id });
    else this.#pending.resolve(true);
  }

  /** The server confirmed a deployment. */
  onConfirmed(deploymentId: string): void {
    if (this.#pending?.id === deploymentId) this.#pending.resolve(true);
  }
}
