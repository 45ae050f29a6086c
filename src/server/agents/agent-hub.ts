import { type IncomingMessage, STATUS_CODES } from 'node:http';
import type { Duplex } from 'node:stream';
import type { Selectable } from 'kysely';
import type { Logger } from 'pino';
import { type WebSocket, WebSocketServer } from 'ws';
import { CairnError } from '../../lib/cairn-error.ts';
import {
  AGENT_PROTOCOL_VERSION,
  type AgentMessage,
  agentMessageSchema,
  CLOSE_CODES,
  type ClosurePath,
  type DeploymentResult,
  type DesiredDeployment,
  MAX_AGENT_MESSAGE_BYTES,
  MIN_AGENT_PROTOCOL_VERSION,
  type ServerMessage,
} from '../../protocol/agent-protocol.ts';
import { OPEN_STATES } from '../../protocol/deployment-state.ts';
import type { Authenticator } from '../auth/authenticator.ts';
import type { Principal } from '../auth/principal.ts';
import { AgentRepository, type AgentRow } from '../db/agent-repository.ts';
import type { CacheRepository } from '../db/cache-repository.ts';
import type { DeploymentsTable } from '../db/database-schema.ts';
import { DeploymentRepository } from '../db/deployment-repository.ts';
import type { WriteBatch } from '../db/write-batch.ts';
import type { EventBus } from '../events/event-bus.ts';
import { errorResponse } from '../http/error-response.ts';
import type { LogWriter } from './log-writer.ts';

/** How often each side pings; a peer silent for two intervals is dead (well within 30 s). */
export const HEARTBEAT_MS = 10_000;

/** Messages an agent may send in a burst, and per second after it (agents batch their logs). */
const MESSAGE_BURST = 500;
const MESSAGES_PER_SECOND = 100;

/** Messages of one agent waiting to be handled before its socket is paused (bounded memory). */
const PAUSE_AT = 32;

/**
 * Agent connections being set up at once (authentication through welcome), and how many more
 * may wait for a turn. Beyond that an agent is told 503 with a Retry-After: in a reconnect storm
 * the server keeps answering everything else, and agents come back in waves instead of all at once.
 */
export const CONNECT_LIMITS = { concurrent: 128, waiting: 4096 } as const;

/** Agents a server expects to take back per second after a restart: sets the going-away spread. */
const RECONNECTS_PER_SECOND = 500;

/** How long the list of caches told to agents is reused (a storm asks for it 10,000 times). */
const CACHES_TTL_MS = 1000;

/** What the hub remembers of a deployment it told an agent about. */
interface Known {
  readonly id: number;
  readonly rolloutId: number;
  readonly workspaceId: number;
  readonly storePath: string;
  state: string;
}

interface Connection {
  readonly ws: WebSocket;
  readonly agent: AgentRow;
  readonly principal: Principal;
  alive: boolean;
  helloDone: boolean;
  /** The Nix system the agent reported, which picks its rollback script. */
  system: string;
  /** `http(s)://host:port` as the agent addressed us, for the cache URLs it is told. */
  readonly requestBase: string;
  /** Token bucket of the message rate limit. */
  allowance: number;
  allowanceAt: number;
  /** Messages received and not yet handled. */
  queued: number;
  /** Called once the agent is welcomed: gives its connect turn back. */
  readonly welcomed: () => void;
  /** Deployments told to this agent (or looked up for it) and not over yet, by id. */
  readonly known: Map<number, Known>;
}

/** Where the hub records the closures agents report (see `src/server/closures/`). */
export interface ClosureSink {
  recordPart(input: {
    workspaceId: number;
    root: string;
    paths: readonly ClosurePath[];
    final: boolean;
    now: number;
  }): Promise<unknown>;
}

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
  /** Overrides {@link CONNECT_LIMITS} (tests). */
  readonly connectLimits?: { readonly concurrent: number; readonly waiting: number };
  /** Records reported closures; without it they are ignored. */
  readonly closures?: ClosureSink;
}

/**
 * Holds every agent's WebSocket: authenticates the upgrade, validates each message, records what
 * agents report, and tells each agent its desired deployment on connect and whenever it changes.
 */
export class AgentHub {
  readonly #deps: AgentHubDeps;
  readonly #wss: WebSocketServer;
  readonly #byAgent = new Map<number, Connection>();
  readonly #heartbeat: NodeJS.Timeout;
  readonly #unsubscribe: Array<() => void>;
  /** Connections between upgrade and welcome, and the ones waiting for a turn. */
  #connecting = 0;
  /** Set by close(): new agents are turned away. */
  #closing = false;
  /** Connections opened and closed since the last heartbeat, for its summary line. */
  #joined = 0;
  #left = 0;
  readonly #waiting: Array<() => void> = [];
  /** Agents whose desired deployment is to be looked up in the next batch, with who waits. */
  #desiredWanted = new Map<number, Array<(row: Selectable<DeploymentsTable> | undefined) => void>>();
  #desiredTimer: NodeJS.Immediate | undefined;
  readonly #cachesByWorkspace = new Map<number, { at: number; list: ReturnType<CacheRepository['list']> }>();

  constructor(deps: AgentHubDeps) {
    this.#deps = deps;
    this.#wss = new WebSocketServer({ noServer: true, maxPayload: MAX_AGENT_MESSAGE_BYTES });
    this.#heartbeat = setInterval(() => this.#beat(), deps.heartbeatMs ?? HEARTBEAT_MS);
    this.#heartbeat.unref();
    this.#unsubscribe = [
      deps.bus.subscribe('desired', (e) => {
        if (e.deployment !== undefined) this.#sendDesiredRow(e.agentId, e.deployment);
        else void this.#sendDesired(e.agentId);
      }),
      deps.bus.subscribe('token-revoked', ({ tokenId }) => this.#closeToken(tokenId)),
    ];
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
    if (this.#closing) {
      this.#refuse(
        socket,
        new CairnError('UNAVAILABLE', 'Cannot connect the agent now: the server is shutting down', {
          headers: { 'Retry-After': String(1 + Math.floor(Math.random() * 5)) },
        }),
      );
      return;
    }
    const release = await this.#takeConnectSlot(socket);
    if (!release) return;
    let principal: Principal | undefined;
    let agent: AgentRow | undefined;
    try {
      principal = await this.#deps.auth.authenticate(req.headers.authorization, req.socket.remoteAddress);
      if (!principal)
        throw new CairnError('UNAUTHENTICATED', 'Cannot connect the agent: no token (set CAIRN_AGENT_TOKEN)');
      const scope = principal.scopes.find((s) => s.kind === 'agent');
      if (scope?.kind !== 'agent') {
        throw new CairnError(
          'FORBIDDEN',
          `Cannot connect the agent: token '${principal.tokenName}' is not an agent token`,
        );
      }
      const wanted = new URL(req.url ?? '/', 'http://x').searchParams.get('agent');
      if (wanted !== null && wanted !== scope.agent) {
        throw new CairnError(
          'FORBIDDEN',
          `Cannot connect the agent: this token belongs to agent '${scope.agent}', not '${wanted}'`,
        );
      }
      agent = await this.#deps.agents.byName(principal.workspaceId, scope.agent);
      if (!agent)
        throw new CairnError(
          'UNAUTHENTICATED',
          `Cannot connect the agent: agent '${scope.agent}' no longer exists`,
        );
    } catch (err) {
      release();
      this.#refuse(socket, err);
      return;
    }
    if (socket.destroyed) return release();
    const a = agent;
    const p = principal;
    const proto =
      req.headers['x-forwarded-proto'] === 'https' || 'encrypted' in req.socket ? 'https' : 'http';
    const requestBase = `${proto}://${req.headers.host ?? 'localhost'}`;
    this.#wss.handleUpgrade(req, socket, head, (ws) => this.#accept(ws, a, p, requestBase, release));
  }

  /**
   * Waits for a turn to set up a connection; resolves to the function that gives the turn back
   * (at welcome, or when the connection ends first), or to undefined when the agent was told to
   * come back later or left while waiting.
   */
  async #takeConnectSlot(socket: Duplex): Promise<(() => void) | undefined> {
    const limits = this.#deps.connectLimits ?? CONNECT_LIMITS;
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
        new CairnError(
          'UNAVAILABLE',
          `Cannot connect the agent now: ${limits.concurrent + limits.waiting} agents are connecting; retry in ${wait}s`,
          { headers: { 'Retry-After': String(wait) } },
        ),
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

  /** Answers a refused upgrade with an HTTP error whose JSON body says why. */
  #refuse(socket: Duplex, err: unknown): void {
    const { status, body, headers } = errorResponse(err, this.#deps.log);
    const text = JSON.stringify(body);
    const extra = Object.entries(headers)
      .map(([k, v]) => `${k}: ${v}\r\n`)
      .join('');
    socket.end(
      `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? 'Error'}\r\n${extra}` +
        `Content-Type: application/json\r\nContent-Length: ${Buffer.byteLength(text)}\r\nConnection: close\r\n\r\n${text}`,
    );
  }

  #accept(
    ws: WebSocket,
    agent: AgentRow,
    principal: Principal,
    requestBase: string,
    releaseSlot: () => void,
  ): void {
    const old = this.#byAgent.get(agent.id);
    if (old) old.ws.close(CLOSE_CODES.replaced, 'replaced by a newer connection of the same agent');
    // An agent that never says hello gives its turn back after a while all the same.
    const slotTimer = setTimeout(releaseSlot, 10_000);
    slotTimer.unref();
    const conn: Connection = {
      ws,
      agent,
      principal,
      alive: true,
      helloDone: false,
      system: agent.system ?? '',
      requestBase,
      allowance: MESSAGE_BURST,
      allowanceAt: Date.now(),
      queued: 0,
      known: new Map(),
      welcomed: () => {
        clearTimeout(slotTimer);
        releaseSlot();
      },
    };
    this.#byAgent.set(agent.id, conn);
    const log = this.#deps.log.child({ agent: agent.name });
    // Per agent at debug: a fleet's restart would otherwise log 10,000 lines at once (and a slow
    // log pipe blocks the server); the heartbeat logs how many came and went instead.
    log.debug('agent connected');
    this.#joined++;
    ws.on('pong', () => {
      conn.alive = true;
    });
    // Every message is handled in order: a result must not overtake the logs before it.
    let queue = Promise.resolve();
    ws.on('message', (data, isBinary) => {
      conn.alive = true;
      const now = Date.now();
      conn.allowance = Math.min(
        MESSAGE_BURST,
        conn.allowance + ((now - conn.allowanceAt) / 1000) * MESSAGES_PER_SECOND,
      );
      conn.allowanceAt = now;
      if (conn.allowance < 1) {
        this.#send(conn, {
          type: 'error',
          code: 'TOO_MANY_REQUESTS',
          message: `Cannot keep the connection: more than ${MESSAGES_PER_SECOND} messages per second`,
        });
        conn.ws.close(CLOSE_CODES.rateLimited, 'message rate limit');
        return;
      }
      conn.allowance -= 1;
      // Messages wait here while earlier ones are handled; past a few, stop reading the socket
      // so that a busy server holds a bounded amount per agent (TCP then slows the agent down).
      conn.queued++;
      if (conn.queued >= PAUSE_AT && !ws.isPaused) ws.pause();
      queue = queue
        .then(() => this.#onMessage(conn, data as Buffer, isBinary))
        .catch((err) => {
          log.error({ err }, 'cannot handle agent message');
        })
        .finally(() => {
          conn.queued--;
          if (ws.isPaused && conn.queued < PAUSE_AT / 2) ws.resume();
        });
    });
    ws.on('close', (code, reason) => {
      log.debug({ code, reason: reason.toString() }, 'agent disconnected');
      this.#left++;
      clearTimeout(slotTimer);
      releaseSlot();
      if (this.#byAgent.get(agent.id) === conn) {
        this.#byAgent.delete(agent.id);
        const now = this.#deps.now();
        void this.#deps.writes
          .write((db) => new AgentRepository(db).setOffline(agent.id, now))
          .catch((err) => log.warn({ err }, 'cannot record the agent offline'));
      }
    });
    ws.on('error', (err) => log.warn({ err }, 'agent socket error'));
  }

  /** A deployment of this agent, from what it was told or else from the database. */
  async #knownDeployment(conn: Connection, deploymentId: string): Promise<Known | undefined> {
    const id = Number(deploymentId);
    const cached = conn.known.get(id);
    if (cached) return cached;
    const d = await this.#deps.deployments.byId(conn.agent.workspace_id, id);
    if (!d || d.agent_id !== conn.agent.id) return undefined;
    return this.#remember(conn, d);
  }

  #remember(
    conn: Connection,
    d: { id: number; rollout_id: number; workspace_id: number; store_path: string; state: string },
  ): Known {
    const k: Known = {
      id: d.id,
      rolloutId: d.rollout_id,
      workspaceId: d.workspace_id,
      storePath: d.store_path,
      state: d.state,
    };
    // Only open deployments are remembered, and only a few: an agent runs one at a time.
    if (OPEN_STATES.includes(d.state as never)) {
      if (conn.known.size >= 8) conn.known.delete(conn.known.keys().next().value!);
      conn.known.set(d.id, k);
    }
    return k;
  }

  async #onMessage(conn: Connection, data: Buffer, isBinary: boolean): Promise<void> {
    let msg: AgentMessage;
    try {
      if (isBinary) throw new Error('binary frames are not part of the protocol');
      const parsed = agentMessageSchema.safeParse(JSON.parse(data.toString('utf8')));
      if (!parsed.success) {
        const issue = parsed.error.issues[0];
        throw new Error(`${issue?.path.join('.') || 'message'}: ${issue?.message}`);
      }
      msg = parsed.data;
    } catch (err) {
      this.#send(conn, {
        type: 'error',
        code: 'BAD_REQUEST',
        message: `Cannot read agent message: ${(err as Error).message}`,
      });
      conn.ws.close(CLOSE_CODES.invalidMessage, 'invalid message');
      return;
    }
    if (!conn.helloDone && msg.type !== 'hello') {
      this.#send(conn, {
        type: 'error',
        code: 'BAD_REQUEST',
        message: 'Cannot handle agent message: the first message must be hello',
      });
      conn.ws.close(CLOSE_CODES.invalidMessage, 'hello expected');
      return;
    }
    const { bus, now, writes } = this.#deps;
    const agentId = conn.agent.id;
    switch (msg.type) {
      case 'hello': {
        if (msg.protocol < MIN_AGENT_PROTOCOL_VERSION) {
          this.#send(conn, {
            type: 'error',
            code: 'BAD_REQUEST',
            message: `Cannot accept agent: protocol ${msg.protocol} is older than ${MIN_AGENT_PROTOCOL_VERSION}; upgrade the agent`,
          });
          conn.ws.close(CLOSE_CODES.invalidMessage, 'protocol too old');
          return;
        }
        conn.helloDone = true;
        conn.system = msg.observed.system;
        const observed = msg.observed;
        const at = now();
        const recorded = writes.write((db) => new AgentRepository(db).recordObserved(agentId, observed, at));
        const finished = msg.unreported.map((r) => this.#finish(conn, r));
        await Promise.all([recorded, ...finished]);
        const [desired, caches] = await Promise.all([
          this.#desiredOf(agentId),
          this.#caches(conn.agent.workspace_id),
        ]);
        const base = this.#deps.baseUrl(conn.requestBase);
        if (desired) this.#remember(conn, desired);
        this.#send(conn, {
          type: 'welcome',
          protocol: AGENT_PROTOCOL_VERSION,
          agent: conn.agent.name,
          caches: caches.map((c) => ({
            url: `${base}/cache/${c.name}`,
            publicKey: c.public_key,
            private: c.public !== 1,
          })),
          desired: desired ? toDesired(desired, conn.system) : null,
        });
        conn.welcomed();
        return;
      }
      case 'progress': {
        const d = await this.#knownDeployment(conn, msg.deploymentId);
        if (!d || !OPEN_STATES.includes(d.state as never)) return;
        const step = msg.step;
        const at = now();
        // Not awaited: the write is committed with others within milliseconds, in order, and the
        // step is announced once it is.
        void writes
          .write((db) => new DeploymentRepository(db).start(d.id, agentId, step, at))
          .then((started) => {
            if (!started) {
              d.state = 'cancelled';
              return;
            }
            d.state = 'running';
            bus.publish('deployment', {
              workspaceId: d.workspaceId,
              rolloutId: d.rolloutId,
              deploymentId: d.id,
              agent: conn.agent.name,
              state: 'running',
              step,
              reason: null,
            });
          })
          .catch((err) => this.#deps.log.error({ err, agent: conn.agent.name }, 'cannot record a step'));
        return;
      }
      case 'log': {
        const d = await this.#knownDeployment(conn, msg.deploymentId);
        if (!d) return;
        const target = { deploymentId: d.id, rolloutId: d.rolloutId, agent: conn.agent.name };
        // Past the writer's high-water mark, this agent waits (and its socket pauses) until it drains.
        if (!this.#deps.logs.append(target, msg.lines)) await this.#deps.logs.flush();
        return;
      }
      case 'result': {
        const observed = msg.observed;
        const at = now();
        void writes
          .write((db) => new AgentRepository(db).recordObserved(agentId, observed, at))
          .catch((err) =>
            this.#deps.log.error({ err, agent: conn.agent.name }, 'cannot record observed state'),
          );
        await this.#finish(conn, msg.result);
        await this.#sendDesired(agentId);
        return;
      }
      case 'observed': {
        const observed = msg.observed;
        const at = now();
        await writes.write((db) => new AgentRepository(db).recordObserved(agentId, observed, at));
        return;
      }
      case 'closure': {
        const d = await this.#knownDeployment(conn, msg.deploymentId);
        if (!d || !this.#deps.closures) return;
        await this.#deps.closures.recordPart({
          workspaceId: d.workspaceId,
          root: d.storePath,
          paths: msg.paths,
          final: msg.final,
          now: now(),
        });
        return;
      }
      case 'confirm': {
        // The agent reached us over a new connection after switching: its network works. The
        // database, not this connection's memory, says whether the deployment still runs.
        const d = await this.#deps.deployments.byId(conn.agent.workspace_id, Number(msg.deploymentId));
        if (d && d.agent_id === conn.agent.id && d.state === 'running') {
          this.#remember(conn, d);
          this.#send(conn, { type: 'confirmed', deploymentId: msg.deploymentId });
        }
        return;
      }
    }
  }

  async #finish(conn: Connection, result: DeploymentResult): Promise<void> {
    const d = await this.#knownDeployment(conn, result.deploymentId);
    if (!d) return;
    const agentId = conn.agent.id;
    const at = this.#deps.now();
    // The batch writes the log lines that came before the result first.
    const changed = await this.#deps.writes.write((db) =>
      new DeploymentRepository(db).finish(d.id, agentId, result, at),
    );
    this.#deps.logs.forget(d.id);
    conn.known.delete(d.id);
    d.state = result.state;
    if (!changed) return;
    this.#deps.bus.publish('deployment', {
      workspaceId: d.workspaceId,
      rolloutId: d.rolloutId,
      deploymentId: d.id,
      agent: conn.agent.name,
      state: result.state,
      step: result.step,
      reason: result.reason,
    });
  }

  /** The caches of a workspace, as told to agents; reused for a second. */
  async #caches(workspaceId: number) {
    const now = Date.now();
    let entry = this.#cachesByWorkspace.get(workspaceId);
    if (!entry || now - entry.at > CACHES_TTL_MS) {
      entry = { at: now, list: this.#deps.caches.list(workspaceId) };
      this.#cachesByWorkspace.set(workspaceId, entry);
      entry.list.catch(() => this.#cachesByWorkspace.delete(workspaceId));
    }
    return await entry.list;
  }

  /**
   * What an agent should run, looked up together with every other agent asking in the same
   * turn of the event loop: one query for a thousand agents reporting results at once.
   */
  #desiredOf(agentId: number): Promise<Selectable<DeploymentsTable> | undefined> {
    return new Promise((resolve, reject) => {
      const waiting = this.#desiredWanted.get(agentId);
      if (waiting) waiting.push(resolve);
      else this.#desiredWanted.set(agentId, [resolve]);
      this.#desiredTimer ??= setImmediate(() => {
        this.#desiredTimer = undefined;
        const wanted = this.#desiredWanted;
        this.#desiredWanted = new Map();
        this.#deps.deployments.desiredForMany([...wanted.keys()]).then(
          (rows) => {
            for (const [id, resolvers] of wanted) for (const r of resolvers) r(rows.get(id));
          },
          (err) => {
            for (const resolvers of wanted.values()) for (const _ of resolvers) reject(err);
          },
        );
      });
    });
  }

  async #sendDesired(agentId: number): Promise<void> {
    const conn = this.#byAgent.get(agentId);
    if (!conn?.helloDone) return;
    const desired = await this.#desiredOf(agentId);
    this.#sendDesiredRow(agentId, desired ?? null);
  }

  /** Tells a connected agent what to run, from a row already looked up (a rollout's fan-out). */
  #sendDesiredRow(agentId: number, desired: Selectable<DeploymentsTable> | null): void {
    const conn = this.#byAgent.get(agentId);
    if (!conn?.helloDone) return;
    if (desired) this.#remember(conn, desired);
    this.#send(conn, { type: 'desired', desired: desired ? toDesired(desired, conn.system) : null });
  }

  #send(conn: Connection, msg: ServerMessage): void {
    if (conn.ws.readyState === conn.ws.OPEN) conn.ws.send(JSON.stringify(msg));
  }

  #closeToken(tokenId: string): void {
    for (const conn of this.#byAgent.values()) {
      if (conn.principal.tokenId === tokenId) {
        this.#send(conn, {
          type: 'error',
          code: 'UNAUTHENTICATED',
          message: 'Cannot keep the connection: the agent token was revoked',
        });
        conn.ws.close(CLOSE_CODES.revoked, 'token revoked');
      }
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
    // A thousand pings per turn of the event loop: 10,000 in one turn would hold up requests.
    const conns = [...this.#byAgent.values()];
    const pingSome = (from: number) => {
      for (const conn of conns.slice(from, from + 1000)) {
        if (!conn.alive) {
          conn.ws.terminate();
          continue;
        }
        conn.alive = false;
        conn.ws.ping();
      }
      if (from + 1000 < conns.length) setImmediate(pingSome, from + 1000);
    };
    pingSome(0);
  }

  /** Closes every agent connection (they will reconnect elsewhere or after a restart). */
  async close(): Promise<void> {
    this.#closing = true;
    clearInterval(this.#heartbeat);
    for (const u of this.#unsubscribe) u();
    // Agents come back at random within a window that grows with the fleet: 10,000 agents all
    // at once would fill the next server's accept queue (and delay everything else) for seconds.
    const within = Math.min(120, Math.max(1, Math.ceil(this.#byAgent.size / RECONNECTS_PER_SECOND)));
    for (const conn of this.#byAgent.values()) {
      this.#send(conn, { type: 'going-away', reconnectWithinSeconds: within });
      conn.ws.close(CLOSE_CODES.shuttingDown, 'server shutting down');
    }
    await this.#deps.logs.flush();
    await this.#deps.writes.flush();
    await new Promise<void>((resolve) => this.#wss.close(() => resolve()));
    const ids = [...this.#byAgent.keys()];
    this.#byAgent.clear();
    const now = this.#deps.now();
    await this.#deps.writes
      .write(async (db) => {
        for (const id of ids) await new AgentRepository(db).setOffline(id, now);
      })
      .catch(() => {});
    await this.#deps.writes.flush();
  }
}

function toDesired(
  d: {
    id: number;
    store_path: string;
    rollback_script: string | null;
    exit4: string;
    health_checks: string | null;
    confirm_timeout: number;
    kind: string;
  },
  system: string,
): DesiredDeployment {
  const scripts = d.rollback_script === null ? {} : (parsedOnce(d.rollback_script) as Record<string, string>);
  return {
    id: String(d.id),
    storePath: d.store_path,
    rollbackScript: Object.hasOwn(scripts, system) ? (scripts[system] ?? null) : null,
    exit4: d.exit4 === 'tolerate' ? 'tolerate' : 'fail',
    healthChecks:
      d.health_checks === null ? [] : (parsedOnce(d.health_checks) as DesiredDeployment['healthChecks']),
    confirmTimeoutSeconds: d.confirm_timeout,
    rollback: d.kind === 'rollback',
  };
}

/**
 * JSON.parse, remembered for the last few texts: every deployment of a rollout carries the same
 * rollback scripts and health checks, and a fan-out to 10,000 agents need not parse them 10,000
 * times. The result is shared: callers must not change it.
 */
const parsed = new Map<string, unknown>();
function parsedOnce(text: string): unknown {
  let value = parsed.get(text);
  if (value === undefined) {
    value = JSON.parse(text);
    if (parsed.size >= 64) parsed.clear();
    parsed.set(text, value);
  }
  return value;
}
