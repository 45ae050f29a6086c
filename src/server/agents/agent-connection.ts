import type { Logger } from 'pino';
import type { WebSocket } from 'ws';
import { TokenBucket, type TokenBucketOptions } from '../../lib/token-bucket.ts';
import {
  type AgentMessage,
  CLOSE_CODES,
  type MachinePlan,
  type ServerMessage,
} from '../../protocol/agent-protocol.ts';
import type { Principal } from '../auth/principal.ts';
import type { AgentRow } from '../db/agent-repository.ts';
import type { DeploymentRepository } from '../db/deployment-repository.ts';
import { KnownDeployments } from './known-deployments.ts';
import { readAgentMessage } from './read-agent-message.ts';

/** Messages an agent may send in a burst, and per second after it (agents batch their logs). */
const MESSAGE_RATE: TokenBucketOptions = { burst: 500, perSecond: 100 };

/** Messages of one agent waiting to be handled before its socket is paused (bounded memory). */
const PAUSE_AT = 32;

/** How long an agent that never says hello holds its connect turn. */
const CONNECT_TURN_MS = 10_000;

/** An agent's answer to `plan`: its plan, or why there is none. */
export interface PlanAnswer {
  readonly plan: MachinePlan | null;
  readonly error: string | null;
}

/** What an {@link AgentConnection} is made of. */
export interface AgentConnectionOptions {
  readonly ws: WebSocket;
  readonly agent: AgentRow;
  readonly principal: Principal;
  /** `http(s)://host:port` as the agent addressed us. */
  readonly requestBase: string;
  /** The agent's logger. */
  readonly log: Logger;
  /** Gives the connect turn back (see `ConnectGate`); called once welcomed or closed. */
  readonly releaseTurn: () => void;
  /** Where deployments not yet known to the connection are looked up. */
  readonly deployments: Pick<DeploymentRepository, 'byId'>;
  /** Handles one message; the next waits until the returned promise settles. */
  readonly onMessage: (conn: AgentConnection, msg: AgentMessage) => Promise<void>;
  /** Called once when the socket closes. */
  readonly onClose: (conn: AgentConnection, code: number, reason: Buffer) => void;
}

/**
 * One agent's WebSocket and what the server knows of it. Reads its messages in order, one at a
 * time, under a rate limit; pauses the socket while too many wait (so TCP slows the agent down and
 * a busy server holds a bounded amount per agent); and closes it on an unreadable message.
 */
export class AgentConnection {
  readonly ws: WebSocket;
  readonly agent: AgentRow;
  readonly principal: Principal;
  /** `http(s)://host:port` as the agent addressed us, for the cache URLs it is told. */
  readonly requestBase: string;
  readonly log: Logger;
  /** Deployments told to this agent (or looked up for it) and not over yet. */
  readonly known: KnownDeployments;
  /** Set by any sign of life, cleared by each heartbeat's ping. */
  alive = true;
  helloDone = false;
  /**
   * The deployment this connection was last told to run (null: nothing; undefined before its
   * welcome): telling it the same again is never needed on one connection, and a re-sync that
   * looked it up as its result arrived would tell it to run a finished one.
   */
  toldDesired: number | null | undefined;
  /** The connection epoch its hello took (see AgentRepository.recordHello); undefined before. */
  epoch: number | undefined;
  /** The epoch of the connection this one replaced on this replica, if that one had said hello. */
  replacedEpoch: number | undefined;
  /** The Nix system the agent reported, which picks its rollback script. */
  system: string;
  /** The protocol version its hello said (0 before it). */
  protocol = 0;
  /** Plan requests sent and not answered yet, by request id. */
  readonly plans = new Map<string, (answer: PlanAnswer) => void>();
  readonly #rate = new TokenBucket(MESSAGE_RATE);
  /** Messages received and not yet handled. */
  #queued = 0;
  /** Every message is handled in order: a result must not overtake the logs before it. */
  #queue = Promise.resolve();
  readonly #turnTimer: NodeJS.Timeout;
  readonly #releaseTurn: () => void;
  readonly #onMessage: AgentConnectionOptions['onMessage'];

  constructor(o: AgentConnectionOptions) {
    this.ws = o.ws;
    this.agent = o.agent;
    this.principal = o.principal;
    this.requestBase = o.requestBase;
    this.log = o.log;
    this.known = new KnownDeployments(o.agent, o.deployments);
    this.system = o.agent.system ?? '';
    this.#releaseTurn = o.releaseTurn;
    this.#onMessage = o.onMessage;
    // An agent that never says hello gives its turn back after a while all the same.
    this.#turnTimer = setTimeout(o.releaseTurn, CONNECT_TURN_MS);
    this.#turnTimer.unref();
    const ws = o.ws;
    ws.on('pong', () => {
      this.alive = true;
    });
    ws.on('message', (data, isBinary) => this.#receive(data as Buffer, isBinary));
    ws.on('close', (code, reason) => {
      clearTimeout(this.#turnTimer);
      for (const answer of this.plans.values()) answer({ plan: null, error: 'the agent disconnected' });
      this.plans.clear();
      o.releaseTurn();
      o.onClose(this, code, reason);
    });
    ws.on('error', (err) => this.log.warn({ err }, 'agent socket error'));
  }

  /** The agent was welcomed: gives its connect turn back. */
  welcomed(): void {
    clearTimeout(this.#turnTimer);
    this.#releaseTurn();
  }

  /** Sends a message if the socket is still open. */
  send(msg: ServerMessage): void {
    if (this.ws.readyState === this.ws.OPEN) this.ws.send(JSON.stringify(msg));
  }

  /** Tells the agent why in an `error` message, then closes the socket. */
  closeWithError(
    error: { readonly code: string; readonly message: string },
    close: { readonly code: number; readonly reason: string },
  ): void {
    this.send({ type: 'error', code: error.code, message: error.message });
    this.ws.close(close.code, close.reason);
  }

  #receive(data: Buffer, isBinary: boolean): void {
    this.alive = true;
    if (!this.#rate.tryTake()) {
      this.closeWithError(
        {
          code: 'TOO_MANY_REQUESTS',
          message: `Cannot keep the connection: more than ${MESSAGE_RATE.perSecond} messages per second`,
        },
        { code: CLOSE_CODES.rateLimited, reason: 'message rate limit' },
      );
      return;
    }
    // Messages wait here while earlier ones are handled; past a few, stop reading the socket
    // so that a busy server holds a bounded amount per agent (TCP then slows the agent down).
    const ws = this.ws;
    this.#queued++;
    if (this.#queued >= PAUSE_AT && !ws.isPaused) ws.pause();
    this.#queue = this.#queue
      .then(() => this.#handle(data, isBinary))
      .catch((err) => {
        this.log.error({ err }, 'cannot handle agent message');
      })
      .finally(() => {
        this.#queued--;
        if (ws.isPaused && this.#queued < PAUSE_AT / 2) ws.resume();
      });
  }

  /** Reads one message and hands it on; an unreadable one closes the connection. */
  #handle(data: Buffer, isBinary: boolean): Promise<void> | undefined {
    let msg: AgentMessage;
    try {
      msg = readAgentMessage(data, isBinary);
    } catch (err) {
      this.closeWithError(
        { code: 'BAD_REQUEST', message: `Cannot read agent message: ${(err as Error).message}` },
        { code: CLOSE_CODES.invalidMessage, reason: 'invalid message' },
      );
      return undefined;
    }
    return this.#onMessage(this, msg);
  }
}
