import WebSocket from 'ws';
import {
  type AgentMessage,
  CLOSE_CODES,
  MAX_AGENT_MESSAGE_BYTES,
  type Observed,
  type ServerMessage,
  serverMessageSchema,
} from '../protocol/agent-protocol.ts';

/** The first message of every connection. */
export type HelloMessage = Extract<AgentMessage, { type: 'hello' }>;

/** Why a connection ended, and what the server asked of the next attempt. */
export interface SocketOutcome {
  /** The server welcomed the agent on it. */
  readonly welcomed: boolean;
  /** One line for the agent's log. */
  readonly why: string;
  /** Epoch ms before which the server asked not to come back (Retry-After on a 503/429), or 0. */
  readonly retryAt: number;
  /** The server went away and asked to be reconnected to within this many ms, or 0. */
  readonly spreadMs: number;
}

/** What one {@link AgentSocket} needs. */
export interface AgentSocketOptions {
  /** The server's base URL, as the agent was given it (for log lines). */
  readonly server: string;
  /** The WebSocket URL to connect to. */
  readonly url: string;
  readonly token: string;
  readonly heartbeatMs: number;
  /** Reads the machine's state for the hello; called once the socket opens. */
  readonly observe: () => Promise<Observed>;
  /** Builds the hello from the machine's state; nothing is sent on the socket before it. */
  readonly hello: (observed: Observed) => HelloMessage;
  /** Every valid server message, `welcome` and `going-away` included. */
  readonly onMessage: (msg: ServerMessage) => void;
  readonly onPong: (data: Buffer) => void;
  /** Called synchronously as the socket closes, before anything else can send. */
  readonly onClose: (outcome: SocketOutcome) => void;
  readonly log: (line: string) => void;
  readonly now: () => number;
  readonly signal: AbortSignal;
  /** Options passed to `ws` as they are (a simulated fleet binds its sockets to a source address). */
  readonly socket?: { readonly localAddress?: string; readonly perMessageDeflate?: boolean };
}

/**
 * One WebSocket connection to the server, from connect to close: it says hello first, keeps the
 * link checked with pings (a server that stops answering is dropped), reads and validates the
 * server's messages, and on close says why and what the server asked of the next attempt.
 */
export class AgentSocket {
  readonly #o: AgentSocketOptions;
  readonly #ws: WebSocket;
  /** Set once the hello went out: only then may anything else be sent. */
  #ready = false;
  #welcomed = false;
  #why = 'connection closed';
  #retryAt = 0;
  #spreadMs = 0;
  /** Resolves with the outcome once the socket has closed. */
  readonly closed: Promise<SocketOutcome>;

  constructor(options: AgentSocketOptions) {
    this.#o = options;
    this.#ws = new WebSocket(options.url, {
      headers: { Authorization: `Bearer ${options.token}` },
      maxPayload: MAX_AGENT_MESSAGE_BYTES,
      handshakeTimeout: 15_000,
      ...options.socket,
    });
    this.closed = new Promise((resolve) => this.#listen(resolve));
  }

  /** The hello went out and the socket has not closed yet (it may be closing). */
  get ready(): boolean {
    return this.#ready;
  }

  /** Sends a message; false before the hello or once the socket is no longer open. */
  send(msg: AgentMessage): boolean {
    if (!this.#ready || this.#ws.readyState !== WebSocket.OPEN) return false;
    this.#ws.send(JSON.stringify(msg));
    return true;
  }

  /** Pings the server with `data`, which its pong carries back. */
  ping(data: string): void {
    if (this.#ws.readyState === WebSocket.OPEN) this.#ws.ping(data);
  }

  /** Drops the connection at once, without a closing handshake. */
  terminate(): void {
    this.#ws.terminate();
  }

  #listen(resolve: (outcome: SocketOutcome) => void): void {
    const ws = this.#ws;
    const o = this.#o;
    let alive = true;
    const heartbeat = setInterval(() => {
      if (!alive) {
        this.#why = 'the server stopped answering heartbeats';
        ws.terminate();
        return;
      }
      alive = false;
      if (ws.readyState === ws.OPEN) ws.ping();
    }, o.heartbeatMs);
    const onAbort = () => ws.close(1000, 'agent stopping');
    o.signal.addEventListener('abort', onAbort, { once: true });

    ws.on('unexpected-response', (_req, res) => {
      // A busy server (503) or one refusing too many attempts (429) says when to come back.
      const retryAfter = Number(res.headers['retry-after']);
      if (Number.isInteger(retryAfter) && retryAfter > 0)
        this.#retryAt = o.now() + Math.min(retryAfter, 300) * 1000;
      let body = '';
      res.on('data', (d: Buffer) => {
        body += d.toString();
      });
      res.on('end', () => {
        let message = body;
        try {
          message = (JSON.parse(body) as { message?: string }).message ?? body;
        } catch {
          // Not our error body: show it as it is.
        }
        this.#why = `the server refused the connection (HTTP ${res.statusCode}): ${message.trim()}`;
        ws.terminate();
      });
    });
    ws.on('open', async () => {
      const observed = await o.observe();
      if (ws.readyState !== ws.OPEN) return;
      // Only now can anything be sent on it: the server closes a connection whose first
      // message is not hello (a log flush used to slip in while observe() ran).
      this.#ready = true;
      ws.send(JSON.stringify(o.hello(observed)));
    });
    ws.on('pong', (data) => {
      alive = true;
      o.onPong(data);
    });
    ws.on('ping', () => {
      alive = true;
    });
    ws.on('message', (data) => {
      alive = true;
      let msg: ServerMessage;
      try {
        msg = serverMessageSchema.parse(JSON.parse(data.toString()));
      } catch (err) {
        o.log(`ignoring an invalid message from the server: ${(err as Error).message.slice(0, 200)}`);
        return;
      }
      if (msg.type === 'welcome') {
        if (!this.#welcomed) o.log(`connected to ${o.server} as ${msg.agent}`);
        this.#welcomed = true;
      } else if (msg.type === 'going-away') {
        this.#spreadMs = msg.reconnectWithinSeconds * 1000;
      }
      o.onMessage(msg);
    });
    ws.on('close', (code, reason) => {
      clearInterval(heartbeat);
      o.signal.removeEventListener('abort', onAbort);
      this.#ready = false;
      if (code === CLOSE_CODES.revoked)
        this.#why = 'the server closed the connection: the agent token was revoked';
      else if (code !== 1006 && reason.length > 0)
        this.#why = `the server closed the connection (${code}: ${reason.toString()})`;
      const outcome = {
        welcomed: this.#welcomed,
        why: this.#why,
        retryAt: this.#retryAt,
        spreadMs: this.#spreadMs,
      };
      o.onClose(outcome);
      resolve(outcome);
    });
    ws.on('error', (err) => {
      if (this.#why === 'connection closed') this.#why = `cannot connect to ${o.server}: ${err.message}`;
    });
  }
}
