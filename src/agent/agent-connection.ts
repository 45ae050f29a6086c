import { sleep } from '../lib/backoff.ts';
import {
  AGENT_WS_PATH,
  type AgentMessage,
  type Observed,
  type ServerMessage,
} from '../protocol/agent-protocol.ts';
import { AgentSocket, type HelloMessage, type SocketOutcome } from './agent-socket.ts';
import { reconnectDelay } from './reconnect-delay.ts';

/** What an {@link AgentConnection} needs. Nothing here touches Nix: a simulated agent can use it. */
export interface AgentConnectionOptions {
  /** The server's base URL (`http(s)://host[:port]`). */
  readonly server: string;
  readonly name: string;
  readonly token: string;
  readonly log: (line: string) => void;
  /** Reads the machine's state for the hello, on every connect. */
  readonly observe: () => Promise<Observed>;
  /** Builds the hello of each connection; nothing is sent before it. */
  readonly hello: (observed: Observed) => HelloMessage;
  /** Every valid server message. */
  readonly onMessage: (msg: ServerMessage) => void;
  /** A pong, with the data of the ping it answers. */
  readonly onPong?: (data: Buffer) => void;
  /** Called as each connection closes, before the next attempt (and before anything else sends). */
  readonly onClose?: (outcome: SocketOutcome) => void;
  /** Ms between heartbeats (10 s): a server silent for two of them is dropped. */
  readonly heartbeatMs?: number;
  readonly backoff?: { readonly initialMs: number; readonly maxMs: number };
  /** Injectable for tests. */
  readonly clock?: { readonly now: () => number; readonly random: () => number };
  /** Options passed to `ws` (a simulated fleet binds its sockets to a source address). */
  readonly socket?: { readonly localAddress?: string; readonly perMessageDeflate?: boolean };
}

/**
 * Keeps an agent connected to its server: one {@link AgentSocket} at a time, reconnected after
 * each close with {@link reconnectDelay} (jittered backoff, Retry-After, a going-away window),
 * and sooner when something cannot wait ({@link reconnectNow}, {@link restart}, {@link hurry}).
 */
export class AgentConnection {
  readonly #o: AgentConnectionOptions;
  /** The current connection attempt, open or still connecting. */
  #socket: AgentSocket | undefined;
  /** Ends the wait between two connection attempts early, while the agent is waiting. */
  #wakeUp: (() => void) | undefined;
  #forceReconnect = false;
  #hurry = false;

  constructor(options: AgentConnectionOptions) {
    this.#o = options;
  }

  /** Connects, and reconnects after every close, until the signal aborts. */
  async run(signal: AbortSignal): Promise<void> {
    const o = this.#o;
    const url = `${o.server.replace(/^http/, 'ws').replace(/\/+$/, '')}${AGENT_WS_PATH}?agent=${encodeURIComponent(o.name)}`;
    const clock = o.clock ?? { now: Date.now, random: Math.random };
    let failures = 0;
    while (!signal.aborted) {
      const socket = new AgentSocket({
        server: o.server,
        url,
        token: o.token,
        heartbeatMs: o.heartbeatMs ?? 10_000,
        observe: o.observe,
        hello: o.hello,
        onMessage: o.onMessage,
        onPong: (data) => o.onPong?.(data),
        onClose: (outcome) => {
          if (this.#socket === socket) this.#socket = undefined;
          o.onClose?.(outcome);
        },
        log: o.log,
        now: clock.now,
        signal,
        ...(o.socket ? { socket: o.socket } : {}),
      });
      this.#socket = socket;
      const outcome = await socket.closed;
      if (signal.aborted) break;
      const urgency = this.#forceReconnect ? 'now' : this.#hurry ? 'soon' : 'normal';
      const next = reconnectDelay(
        {
          failures,
          welcomed: outcome.welcomed,
          retryAt: outcome.retryAt,
          spreadMs: outcome.spreadMs,
          urgency,
        },
        { now: clock.now(), random: clock.random, initialMs: 500, maxMs: 30_000, ...o.backoff },
      );
      failures = next.failures;
      this.#forceReconnect = false;
      o.log(`${outcome.why}; reconnecting in ${(next.delayMs / 1000).toFixed(1)}s`);
      await this.#pause(next.delayMs, signal);
    }
  }

  /** Sends a message on the current connection; false when there is none ready. */
  send(msg: AgentMessage): boolean {
    return this.#socket?.send(msg) ?? false;
  }

  /** Pings the server on the current connection; its pong reaches `onPong` with the same data. */
  ping(data: string): void {
    this.#socket?.ping(data);
  }

  /**
   * Tries to connect now rather than after the backoff: the agent has something for the server
   * (a result, a confirmation) that should not wait up to the backoff's cap once the network is
   * back. Later failures back off as before.
   */
  reconnectNow(): void {
    if (this.#wakeUp) this.#wakeUp();
    else if (!this.#socket?.ready) this.#forceReconnect = true;
  }

  /**
   * Drops the current connection, open or still connecting, once `beforeDrop` settles, and
   * connects again at once; with no connection, connects now.
   */
  restart(beforeDrop: () => Promise<void>): void {
    const old = this.#socket;
    if (!old) {
      this.reconnectNow();
      return;
    }
    this.#forceReconnect = true;
    void beforeDrop().then(() => old.terminate());
  }

  /** While on, reconnection delays stay under a second (a confirmation's timeout is running). */
  hurry(on: boolean): void {
    this.#hurry = on;
  }

  /** Waits between connection attempts, until `ms` pass, the signal aborts or {@link reconnectNow}. */
  async #pause(ms: number, signal: AbortSignal): Promise<void> {
    const wake = new AbortController();
    const onAbort = () => wake.abort();
    signal.addEventListener('abort', onAbort, { once: true });
    this.#wakeUp = () => wake.abort();
    try {
      await sleep(ms, wake.signal);
    } finally {
      this.#wakeUp = undefined;
      signal.removeEventListener('abort', onAbort);
    }
  }
}
