import { randomBytes } from 'node:crypto';
import type { AgentMessage, LogLine } from '../protocol/agent-protocol.ts';

/** Lines of a deployment's log held while the connection is down. */
const MAX_PENDING_LINES = 20_000;

/** What a {@link LogShipper} needs of the connection. */
export interface LogShipperOptions {
  /** Sends on the current connection; false when there is none. */
  readonly send: (msg: AgentMessage) => boolean;
  /** Pings the server on the current connection; {@link LogShipper.received} gets the pong's data. */
  readonly ping: (data: string) => void;
}

/**
 * Ships deployment log lines to the server: numbered, batched every 50 ms, held while the
 * connection is down, and kept after sending until a pong proves the server read them, so that
 * the lines a dying link takes with it (often the very lines that say what broke it) go again.
 */
export class LogShipper {
  readonly #o: LogShipperOptions;
  #pending = new Map<string, LogLine[]>();
  /** Names this agent process as the source of its own log lines (see {@link line}). */
  readonly #runId = `agent-${randomBytes(6).toString('hex')}`;
  #lineNumber = 0;
  #flushTimer: NodeJS.Timeout | undefined;
  /**
   * Log batches sent on the current connection that the server has not yet been shown to have
   * read, by the number of the ping sent after them.
   */
  #unconfirmed: Array<{ ping: number; deploymentId: string; lines: LogLine[] }> = [];
  #pings = 0;
  /** Called once no sent line awaits the server's pong. */
  #onDrained: (() => void) | undefined;

  constructor(options: LogShipperOptions) {
    this.#o = options;
  }

  /**
   * Adds a line of a deployment's log. `from` numbers it by its source's own count (such as an
   * activation's output file, read again by a restarted agent); else by this process's run.
   */
  line(deploymentId: string, text: string, from?: { src: string; n: number }): void {
    let lines = this.#pending.get(deploymentId);
    if (!lines) {
      lines = [];
      this.#pending.set(deploymentId, lines);
    }
    // Numbered, so that a batch sent again after a dropped connection is not shown twice.
    const n = from ?? { src: this.#runId, n: this.#lineNumber++ };
    lines.push({ t: Date.now(), text: text.slice(0, 16_384), src: n.src, n: n.n });
    if (lines.length > MAX_PENDING_LINES) lines.splice(0, lines.length - MAX_PENDING_LINES);
    // Lines go out together every 50 ms: one message per burst, not per line.
    this.#flushTimer ??= setTimeout(() => this.flush(), 50);
  }

  /** Drops the held and unconfirmed lines of a deployment: they are not this server's to read. */
  discard(deploymentId: string): void {
    this.#pending.delete(deploymentId);
    this.#unconfirmed = this.#unconfirmed.filter((b) => b.deploymentId !== deploymentId);
  }

  /** Sends every held line now, as far as the connection allows. */
  flush(): void {
    if (this.#flushTimer) clearTimeout(this.#flushTimer);
    this.#flushTimer = undefined;
    let sent = false;
    try {
      for (const [deploymentId, lines] of this.#pending) {
        while (lines.length > 0) {
          const batch = lines.slice(0, 1000);
          if (!this.#o.send({ type: 'log', deploymentId, lines: batch })) return;
          sent = true;
          this.#unconfirmed.push({ ping: this.#pings + 1, deploymentId, lines: batch });
          lines.splice(0, batch.length);
        }
        this.#pending.delete(deploymentId);
      }
    } finally {
      // The pong to this ping proves the server read every batch sent before it.
      if (sent) this.#o.ping(String(++this.#pings));
      // A peer that never answers pings must not make the agent hold every line forever.
      let held = this.#unconfirmed.reduce((n, b) => n + b.lines.length, 0);
      while (held > MAX_PENDING_LINES) held -= this.#unconfirmed.shift()?.lines.length ?? held;
    }
  }

  /** A pong: the batches sent before its ping reached the server. */
  received(data: Buffer): void {
    const n = Number(data.toString());
    if (!Number.isInteger(n) || n <= 0) return;
    this.#unconfirmed = this.#unconfirmed.filter((b) => b.ping > n);
    if (this.#unconfirmed.length > 0) return;
    const drained = this.#onDrained;
    this.#onDrained = undefined;
    drained?.();
  }

  /** Resolves once the server has shown it read every log line sent, or after `ms`. */
  drained(ms: number): Promise<void> {
    if (this.#unconfirmed.length === 0) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(finish, ms);
      const previous = this.#onDrained;
      function finish() {
        clearTimeout(timer);
        previous?.();
        resolve();
      }
      this.#onDrained = finish;
    });
  }

  /**
   * The connection closed: batches it may have lost go back in front of the held lines, to be
   * sent on the next connection (a line the server did read, whose pong was lost, comes twice).
   */
  connectionLost(): void {
    const lost = this.#unconfirmed;
    this.#unconfirmed = [];
    const drained = this.#onDrained;
    this.#onDrained = undefined;
    drained?.();
    for (const b of lost.reverse()) {
      const held = this.#pending.get(b.deploymentId) ?? [];
      this.#pending.delete(b.deploymentId);
      this.#pending.set(b.deploymentId, [...b.lines, ...held].slice(-MAX_PENDING_LINES));
    }
  }
}
