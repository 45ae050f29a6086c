import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import { CairnError } from '../../lib/cairn-error.ts';
import { refuseUpgrade } from './refuse-upgrade.ts';

/** How many agent connections are set up at once, and how many more may wait for a turn. */
export interface ConnectLimits {
  readonly concurrent: number;
  readonly waiting: number;
}

/**
 * Agent connections being set up at once (authentication through welcome), and how many more
 * may wait for a turn. Beyond that an agent is told 503 with a Retry-After: in a reconnect storm
 * the server keeps answering everything else, and agents come back in waves instead of all at once.
 */
export const CONNECT_LIMITS: ConnectLimits = { concurrent: 128, waiting: 4096 };

/**
 * Admits agent connections a few at a time: an upgrade takes a turn (or waits for one) before it
 * is authenticated, and gives it back once its agent is welcomed. When too many wait, or the
 * server is shutting down, the agent is answered 503 with a random Retry-After.
 */
export class ConnectGate {
  readonly #limits: ConnectLimits;
  readonly #log: Logger;
  /** Connections between upgrade and welcome, and the ones waiting for a turn. */
  #connecting = 0;
  readonly #waiting: Array<() => void> = [];
  readonly #onRefuse: ((code: 'UNAVAILABLE') => void) | undefined;
  /** Set by close(): new agents are turned away. */
  #closed = false;

  constructor(options: {
    readonly log: Logger;
    readonly limits?: ConnectLimits | undefined;
    /** Told the error code of each agent turned away (`/metrics`). */
    readonly onRefuse?: (code: 'UNAVAILABLE') => void;
  }) {
    this.#log = options.log;
    this.#onRefuse = options.onRefuse;
    this.#limits = options.limits ?? CONNECT_LIMITS;
  }

  /**
   * Waits for a turn to set up a connection; resolves to the function that gives the turn back
   * (at welcome, or when the connection ends first), or to undefined when the agent was told to
   * come back later or left while waiting.
   */
  async enter(socket: Duplex): Promise<(() => void) | undefined> {
    if (this.#closed) {
      const wait = 1 + Math.floor(Math.random() * 5);
      this.#refuse(socket, 'Cannot connect the agent now: the server is shutting down', wait);
      return undefined;
    }
    const limits = this.#limits;
    if (this.#connecting < limits.concurrent) {
      this.#connecting++;
    } else if (this.#waiting.length < limits.waiting) {
      // The turn is handed over by the connection that gives it back: #connecting stays as it is.
      await new Promise<void>((resolve) => this.#waiting.push(resolve));
    } else {
      // Spread the retries: agents told the same delay would come back together.
      const wait = 1 + Math.floor(Math.random() * 10);
      this.#refuse(
        socket,
        `Cannot connect the agent now: ${limits.concurrent + limits.waiting} agents are connecting; retry in ${wait}s`,
        wait,
      );
      return undefined;
    }
    let given = false;
    const release = () => {
      if (given) return;
      given = true;
      const next = this.#waiting.shift();
      // In a later turn of the event loop: a batch of welcomes must not start as many new
      // handshakes in the same turn, ahead of every other request.
      if (next) setImmediate(next);
      else this.#connecting--;
    };
    if (socket.destroyed) {
      release();
      return undefined;
    }
    return release;
  }

  /** Turns every agent that comes after away (the server is shutting down). */
  close(): void {
    this.#closed = true;
  }

  #refuse(socket: Duplex, message: string, retryAfterSeconds: number): void {
    const err = new CairnError('UNAVAILABLE', message, {
      headers: { 'Retry-After': String(retryAfterSeconds) },
    });
    this.#onRefuse?.('UNAVAILABLE');
    refuseUpgrade(socket, err, { log: this.#log });
  }
}
