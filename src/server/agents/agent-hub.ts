import { randomBytes } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import type { Selectable } from 'kysely';
import type { Logger } from 'pino';
import { type WebSocket, WebSocketServer } from 'ws';
import { CairnError } from '../../lib/cairn-error.ts';
import {
  CLOSE_CODES,
  MAX_AGENT_MESSAGE_BYTES,
  PLAN_PROTOCOL_VERSION,
} from '../../protocol/agent-protocol.ts';
import { isFinalState } from '../../protocol/deployment-state.ts';
import type { Authenticator } from '../auth/authenticator.ts';
import type { MachinePlanOutcome, PlanQuestion } from '../closures/plan-rollout.ts';
import { AgentRepository, type AgentRow, OFFLINE_WRITES } from '../db/agent-repository.ts';
import { BatchedLookup } from '../db/batched-lookup.ts';
import type { CacheRepository } from '../db/cache-repository.ts';
import type { DeploymentsTable } from '../db/database-schema.ts';
import type { DeploymentRepository, DeploymentRow } from '../db/deployment-repository.ts';
import { IN_LIST_SIZE } from '../db/in-chunks.ts';
import type { WriteBatch } from '../db/write-batch.ts';
import type { EventBus } from '../events/event-bus.ts';
import type { ServerMetrics } from '../metrics/server-metrics.ts';
import { AgentCaches } from './agent-caches.ts';
import { AgentConnection, type AgentConnectionOptions } from './agent-connection.ts';
import type { AgentMessageContext } from './agent-message-context.ts';
import { type AuthenticatedAgent, authenticateUpgrade } from './authenticate-upgrade.ts';
import { ConnectGate, type ConnectLimits } from './connect-gate.ts';
import { DesiredLookup } from './desired-lookup.ts';
import { handleAgentMessage } from './handle-agent-message.ts';
import type { ClosureSink } from './handle-closure.ts';
import type { LogWriter } from './log-writer.ts';
import { refuseUpgrade } from './refuse-upgrade.ts';
import type { ServerIdentity } from './server-identity.ts';
import { toDesired } from './to-desired.ts';

/** How often each side pings; a peer silent for two intervals is dead (well within 30 s). */
export const HEARTBEAT_MS = 10_000;

/** The close reason of a connection another connection of the same agent replaced. */
const REPLACED = 'replaced by a newer connection of the same agent';

/** Agents a server expects to take back per second after a restart: sets the going-away spread. */
const RECONNECTS_PER_SECOND = 500;

/** Connections pinged per turn of the event loop: 10,000 in one turn would hold up requests. */
const PINGS_PER_TURN = 1000;

/** What the hub needs. */
export interface AgentHubDeps {
  readonly auth: Authenticator;
  readonly agents: AgentRepository;
  readonly deployments: DeploymentRepository;
  readonly caches: CacheRepository;
  readonly bus: EventBus;
  readonly logs: LogWriter;
  /** Where the agents' small writes are grouped into transactions. */
  readonly writes: WriteBatch;
  readonly log: Logger;
  readonly now: () => number;
  /** The URL agents reach the server at, given the one the agent's own request used. */
  readonly baseUrl: (requestBase: string) => string;
  readonly heartbeatMs?: number;
  /** Overrides the connect gate's `CONNECT_LIMITS` (tests). */
  readonly connectLimits?: ConnectLimits;
  /** Records reported closures; without it they are ignored. */
  readonly closures?: ClosureSink;
  /** The server's id and the workspaces' names, told to agents in `welcome`. */
  readonly identity: ServerIdentity;
  /** False: leave online flags as they are on close (SQLite's next start reads them; see create-app). */
  readonly markOfflineOnClose?: boolean;
  /** This replica's id, recorded in the row of each agent that says hello here (see replica-lease.ts). */
  readonly replicaId?: string | undefined;
  /** Counts connections, refusals and deployment durations (`/metrics`). */
  readonly metrics?: Pick<ServerMetrics, 'agentConnected' | 'agentRefused' | 'deploymentDuration'>;
}

/**
 * Holds every agent's WebSocket: admits and authenticates the upgrade, hands each message to its
 * handler, and tells each agent its desired deployment on connect and whenever it changes.
 */
/** Finished deployments the hub remembers, for {@link AgentHub}'s desired-state sends. */
const FINISHED_REMEMBERED = 100_000;

export class AgentHub {
  readonly #deps: AgentHubDeps;
  readonly #wss: WebSocketServer;
  readonly #gate: ConnectGate;
  readonly #desired: DesiredLookup;
  /** Deployments and agents looked up for many connections at once (a reconnect storm). */
  readonly #lookups: {
    readonly deployments: Pick<DeploymentRepository, 'byId'>;
    readonly agents: Pick<AgentRepository, 'byName'>;
  };
  readonly #byAgent = new Map<number, AgentConnection>();
  readonly #agentCaches: AgentCaches;
  /** Deployments over lately, oldest first: see {@link #markFinished}. */
  readonly #finished = new Set<number>();
  readonly #heartbeat: NodeJS.Timeout;
  readonly #unsubscribe: Array<() => void>;
  #closing = false;
  /** Connections opened and closed since the last heartbeat, for its summary line. */
  #joined = 0;
  #resyncing = false;
  #left = 0;
  readonly #onMessage: AgentConnectionOptions['onMessage'];
  readonly #onClose: AgentConnectionOptions['onClose'] = (conn, code, reason) =>
    this.#closed(conn, code, reason);

  constructor(deps: AgentHubDeps) {
    this.#deps = deps;
    this.#agentCaches = new AgentCaches(deps.caches);
    this.#wss = new WebSocketServer({ noServer: true, maxPayload: MAX_AGENT_MESSAGE_BYTES });
    this.#gate = new ConnectGate({
      log: deps.log,
      limits: deps.connectLimits,
      onRefuse: (code) => deps.metrics?.agentRefused(code),
    });
    this.#desired = new DesiredLookup(deps.deployments);
    this.#lookups = batchedLookups(deps);
    const ctx: AgentMessageContext = {
      ...deps,
      deployments: this.#lookups.deployments,
      closures: deps.closures,
      desired: this.#desired,
      caches: this.#agentCaches,
      sendDesired: (agentId) => this.#sendDesired(agentId),
      finishing: (deploymentId) => this.#markFinished(deploymentId),
    };
    this.#onMessage = (conn, msg) => handleAgentMessage(conn, msg, ctx);
    this.#heartbeat = setInterval(() => this.#beat(), deps.heartbeatMs ?? HEARTBEAT_MS);
    this.#heartbeat.unref();
    this.#unsubscribe = [
      deps.bus.subscribe('desired', (e) => {
        if (e.deployment !== undefined) this.#sendDesiredRow(e.agentId, e.deployment);
        else void this.#sendDesired(e.agentId);
      }),
      deps.bus.subscribe('token-revoked', ({ tokenId }) => this.#closeToken(tokenId)),
      deps.bus.subscribe('cache-keys', ({ workspaceId }) => this.#rewelcome(workspaceId)),
      deps.bus.subscribe('agent-connected', ({ agentId, epoch }) => this.#closeIfOlder(agentId, epoch)),
      deps.bus.subscribe('resync', () => void this.resync()),
      deps.bus.subscribe('deployment', (e) => {
        if (isFinalState(e.state)) this.#markFinished(e.deploymentId);
      }),
    ];
  }

  /**
   * Remembers a deployment that is over (or whose result is being recorded), so that a desired
   * state looked up just before (a re-sync running while results arrive) does not tell the
   * agent to run it again.
   */
  #markFinished(deploymentId: number): void {
    if (this.#finished.size >= FINISHED_REMEMBERED) {
      const oldest = this.#finished.values().next();
      if (!oldest.done) this.#finished.delete(oldest.value);
    }
    this.#finished.add(deploymentId);
  }

  /** Number of agents connected to this server. */
  get connected(): number {
    return this.#byAgent.size;
  }

  /**
   * Handles an HTTP upgrade on the agent path: the token is checked before the WebSocket
   * handshake, and a refused agent gets an HTTP error whose JSON body says why.
   */
  async handleUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): Promise<void> {
    // Node takes its error listener off the socket before 'upgrade', and ws adds its own only
    // once its handshake starts: without this, an agent resetting its connection while it waits
    // for a turn or for its token check would crash the server.
    socket.on('error', (err) => this.#deps.log.debug({ err }, 'agent socket error before the upgrade'));
    const releaseTurn = await this.#gate.enter(socket);
    if (!releaseTurn) return;
    // Whatever ends the socket gives the turn back (release is idempotent): ws destroys a socket
    // that is no longer readable and writable without calling back, and a turn never given back
    // would close the gate for good after 128 of them.
    socket.once('close', releaseTurn);
    let who: AuthenticatedAgent;
    try {
      who = await authenticateUpgrade(req, { auth: this.#deps.auth, agents: this.#lookups.agents });
    } catch (err) {
      releaseTurn();
      this.#deps.metrics?.agentRefused(err instanceof CairnError ? err.code : 'INTERNAL');
      refuseUpgrade(socket, err, { log: this.#deps.log });
      return;
    }
    if (socket.destroyed) return releaseTurn();
    const proto =
      req.headers['x-forwarded-proto'] === 'https' || 'encrypted' in req.socket ? 'https' : 'http';
    const requestBase = `${proto}://${req.headers.host ?? 'localhost'}`;
    this.#wss.handleUpgrade(req, socket, head, (ws) => this.#accept(ws, who, requestBase, releaseTurn));
  }

  #accept(ws: WebSocket, who: AuthenticatedAgent, requestBase: string, releaseTurn: () => void): void {
    const { agent, principal } = who;
    const old = this.#byAgent.get(agent.id);
    if (old) old.ws.close(CLOSE_CODES.replaced, REPLACED);
    const conn = new AgentConnection({
      ws,
      agent,
      principal,
      requestBase,
      log: this.#deps.log.child({ agent: agent.name }),
      releaseTurn,
      deployments: this.#lookups.deployments,
      onMessage: this.#onMessage,
      onClose: this.#onClose,
    });
    conn.replacedEpoch = old?.epoch ?? old?.replacedEpoch;
    this.#byAgent.set(agent.id, conn);
    // Per agent at debug: a fleet's restart would otherwise log 10,000 lines at once (and a slow
    // log pipe blocks the server); the heartbeat logs how many came and went instead.
    conn.log.debug('agent connected');
    this.#joined++;
    this.#deps.metrics?.agentConnected();
  }

  #closed(conn: AgentConnection, code: number, reason: Buffer): void {
    conn.log.debug({ code, reason: reason.toString() }, 'agent disconnected');
    this.#left++;
    const agentId = conn.agent.id;
    if (this.#byAgent.get(agentId) !== conn) return;
    this.#byAgent.delete(agentId);
    if (this.#closing && this.#deps.markOfflineOnClose === false) return;
    // Only while this connection (or the one it replaced before its hello) is the agent's newest:
    // a newer one, on another replica maybe, keeps the agent online.
    const epoch = conn.epoch ?? conn.replacedEpoch;
    if (epoch === undefined) return;
    const now = this.#deps.now();
    void this.#deps.writes
      .writeGrouped(OFFLINE_WRITES, { id: agentId, epoch, at: now })
      .catch((err) => conn.log.warn({ err }, 'cannot record the agent offline'));
  }

  async #sendDesired(agentId: number): Promise<void> {
    const conn = this.#byAgent.get(agentId);
    if (!conn?.helloDone) return;
    const desired = await this.#desired.of(agentId);
    this.#sendDesiredRow(agentId, desired ?? null, { lookedUp: true });
  }

  /** Tells a connected agent what to run, from a row already looked up (a rollout's fan-out). */
  #sendDesiredRow(
    agentId: number,
    desired: Selectable<DeploymentsTable> | null,
    options: { lookedUp?: boolean } = {},
  ): void {
    const conn = this.#byAgent.get(agentId);
    if (!conn?.helloDone) return;
    // An agent that connected while waiting for approval is told only what the database's
    // lookup allows, which withholds deployments until it is approved.
    if (desired && conn.agent.pending_since !== null && !options.lookedUp) {
      void this.#sendDesired(agentId);
      return;
    }
    // Looked up before it finished: the agent knows it is over, and anything newer is told on its own.
    if (desired && this.#finished.has(desired.id)) return;
    const id = desired?.id ?? null;
    if (conn.toldDesired === id) return;
    conn.toldDesired = id;
    if (desired) conn.known.remember(desired);
    conn.send({ type: 'desired', desired: desired ? toDesired(desired, conn.system) : null });
  }

  /**
   * Tells every agent held here its desired deployment again, read from the database (events
   * may have been lost between replicas): a thousand agents per query, a chunk at a time.
   */
  async resync(): Promise<void> {
    // One at a time: a backstop firing while a slow one runs is served by it.
    if (this.#resyncing) return;
    this.#resyncing = true;
    try {
      const ids = [...this.#byAgent.keys()];
      for (let i = 0; i < ids.length; i += IN_LIST_SIZE) {
        const part = ids.slice(i, i + IN_LIST_SIZE);
        // A connection replaced on another replica whose doorbell was lost is closed now.
        const epochs = await this.#deps.agents.connectionEpochs(part);
        for (const [id, epoch] of epochs) this.#closeIfOlder(id, epoch);
        // Asked in one turn: the lookup makes them one query.
        await Promise.all(part.map((id) => this.#sendDesired(id)));
      }
    } catch (err) {
      this.#deps.log.warn({ err }, 'cannot re-sync the agents; trying again at the next one');
    } finally {
      this.#resyncing = false;
    }
  }

  /** Closes this replica's connection of the agent if a newer one took `epoch` (maybe elsewhere). */
  #closeIfOlder(agentId: number, epoch: number): void {
    const conn = this.#byAgent.get(agentId);
    // A connection that has not said hello yet will take a newer epoch than this one.
    if (conn?.epoch !== undefined && conn.epoch < epoch) conn.ws.close(CLOSE_CODES.replaced, REPLACED);
  }

  #closeToken(tokenId: string): void {
    for (const conn of this.#byAgent.values()) {
      if (conn.principal.tokenId === tokenId) {
        conn.closeWithError(
          { code: 'UNAUTHENTICATED', message: 'Cannot keep the connection: the agent token was revoked' },
          { code: CLOSE_CODES.revoked, reason: 'token revoked' },
        );
      }
    }
  }

  /**
   * A cache's keys changed: the workspace's agents reconnect, spread over a few seconds, and
   * their welcome names the key to trust. An agent keeps the keys of its last welcome until then,
   * and would refuse every path once the key it was told is retired.
   */
  #rewelcome(workspaceId: number): void {
    this.#agentCaches.forget(workspaceId);
    const conns = [...this.#byAgent.values()].filter((c) => c.agent.workspace_id === workspaceId);
    const within = Math.min(120, Math.max(1, Math.ceil(conns.length / RECONNECTS_PER_SECOND)));
    for (const conn of conns) {
      conn.send({ type: 'going-away', reconnectWithinSeconds: within });
      conn.ws.close(CLOSE_CODES.shuttingDown, 'cache signing keys changed');
    }
  }

  #beat(): void {
    if (this.#joined > 0 || this.#left > 0) {
      this.#deps.log.info(
        { connected: this.#byAgent.size, opened: this.#joined, closed: this.#left },
        'agent connections changed',
      );
      this.#joined = 0;
      this.#left = 0;
    }
    const conns = [...this.#byAgent.values()];
    const pingSome = (from: number) => {
      for (const conn of conns.slice(from, from + PINGS_PER_TURN)) {
        if (!conn.alive) {
          conn.ws.terminate();
          continue;
        }
        conn.alive = false;
        conn.ws.ping();
      }
      if (from + PINGS_PER_TURN < conns.length) setImmediate(pingSome, from + PINGS_PER_TURN);
    };
    pingSome(0);
  }

  /**
   * Asks a connected agent what deploying a store path would do (`plan`), and waits for its
   * answer up to `timeoutMs`. An agent not connected here, or whose protocol predates `plan`, is
   * not asked: the outcome says so at once.
   */
  askPlan(agentId: number, question: PlanQuestion): Promise<MachinePlanOutcome> {
    const conn = this.#byAgent.get(agentId);
    if (!conn?.helloDone || conn.ws.readyState !== conn.ws.OPEN)
      return Promise.resolve({ status: 'not-here' });
    if (conn.protocol < PLAN_PROTOCOL_VERSION)
      return Promise.resolve({ status: 'unsupported', protocol: conn.protocol });
    const requestId = randomBytes(8).toString('hex');
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        conn.plans.delete(requestId);
        resolve({ status: 'timeout' });
      }, question.timeoutMs);
      conn.plans.set(requestId, (answer) => {
        clearTimeout(timer);
        resolve(
          answer.plan
            ? { status: 'answered', plan: answer.plan }
            : { status: 'failed', error: answer.error ?? 'no reason given' },
        );
      });
      conn.send({
        type: 'plan',
        requestId,
        storePath: question.storePath,
        rollbackScript: question.rollbackScript,
        dryActivate: question.dryActivate,
        // The agent gives up a little before the server stops waiting, so its reason arrives.
        timeoutSeconds: Math.max(1, Math.floor(question.timeoutMs / 1000) - 1),
      });
    });
  }

  /** Whether the agent holds a connection to this replica (said hello, not replaced or closed since). */
  holds(agentId: number): boolean {
    return this.#byAgent.get(agentId)?.helloDone === true;
  }

  /** The agents holding a connection to this replica (said hello, not replaced or closed since). */
  heldAgents(): number[] {
    return [...this.#byAgent.values()].filter((c) => c.helloDone).map((c) => c.agent.id);
  }

  /** Closes every agent connection (they will reconnect elsewhere or after a restart). */
  async close(): Promise<void> {
    this.#closing = true;
    this.#gate.close();
    clearInterval(this.#heartbeat);
    for (const u of this.#unsubscribe) u();
    // Agents come back within a window that grows with the fleet, not all at once (accept queue).
    const within = Math.min(120, Math.max(1, Math.ceil(this.#byAgent.size / RECONNECTS_PER_SECOND)));
    for (const conn of this.#byAgent.values()) {
      conn.send({ type: 'going-away', reconnectWithinSeconds: within });
      conn.ws.close(CLOSE_CODES.shuttingDown, 'server shutting down');
    }
    await this.#deps.logs.flush();
    await this.#deps.writes.flush();
    await new Promise<void>((resolve) => this.#wss.close(() => resolve()));
    const held = this.#deps.markOfflineOnClose === false ? [] : [...this.#byAgent.values()];
    this.#byAgent.clear();
    const now = this.#deps.now();
    const offline = async (db: Parameters<Parameters<WriteBatch['write']>[0]>[0]) => {
      for (const conn of held) {
        const epoch = conn.epoch ?? conn.replacedEpoch;
        if (epoch !== undefined) await new AgentRepository(db).setOffline(conn.agent.id, now, epoch);
      }
    };
    await this.#deps.writes.write(offline).catch(() => {});
    await this.#deps.writes.flush();
  }
}

/**
 * Deployment and agent lookups by id and by name, each batched: every connection asking in the
 * same turn of the event loop is answered by one query (a thousand agents reconnecting to
 * confirm their deployments would otherwise cost a thousand of each).
 */
function batchedLookups(deps: Pick<AgentHubDeps, 'agents' | 'deployments'>) {
  const deploymentsById = new BatchedLookup<number, DeploymentRow>(
    async (ids) => new Map((await deps.deployments.byIds(ids)).map((d) => [d.id, d])),
  );
  // Keyed "workspace/name": the workspace id is digits, so the first slash ends it.
  const agentsByName = new BatchedLookup<string, AgentRow>(async (keys) => {
    const byWorkspace = new Map<number, string[]>();
    for (const key of keys) {
      const slash = key.indexOf('/');
      const workspaceId = Number(key.slice(0, slash));
      const names = byWorkspace.get(workspaceId);
      if (names) names.push(key.slice(slash + 1));
      else byWorkspace.set(workspaceId, [key.slice(slash + 1)]);
    }
    const out = new Map<string, AgentRow>();
    for (const [workspaceId, names] of byWorkspace)
      for (const a of await deps.agents.byNames(workspaceId, names)) out.set(`${workspaceId}/${a.name}`, a);
    return out;
  });
  return {
    deployments: {
      byId: async (workspaceId: number, id: number) => {
        const d = await deploymentsById.get(id);
        return d?.workspace_id === workspaceId ? d : undefined;
      },
    },
    agents: { byName: (workspaceId: number, name: string) => agentsByName.get(`${workspaceId}/${name}`) },
  };
}
