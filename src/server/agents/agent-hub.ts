import { type IncomingMessage, STATUS_CODES } from 'node:http';
import type { Duplex } from 'node:stream';
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
import type { Authenticator } from '../auth/authenticator.ts';
import type { Principal } from '../auth/principal.ts';
import type { AgentRepository, AgentRow } from '../db/agent-repository.ts';
import type { CacheRepository } from '../db/cache-repository.ts';
import type { DeploymentRepository } from '../db/deployment-repository.ts';
import type { EventBus } from '../events/event-bus.ts';
import { errorResponse } from '../http/error-response.ts';
import type { LogWriter } from './log-writer.ts';

/** How often each side pings; a peer silent for two intervals is dead (well within 30 s). */
export const HEARTBEAT_MS = 10_000;

/** Messages an agent may send in a burst, and per second after it (agents batch their logs). */
const MESSAGE_BURST = 500;
const MESSAGES_PER_SECOND = 100;

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
  readonly log: Logger;
  readonly now: () => number;
  /** The URL agents reach the server at, given the one the agent's own request used. */
  readonly baseUrl: (requestBase: string) => string;
  readonly heartbeatMs?: number;
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

  constructor(deps: AgentHubDeps) {
    this.#deps = deps;
    this.#wss = new WebSocketServer({ noServer: true, maxPayload: MAX_AGENT_MESSAGE_BYTES });
    this.#heartbeat = setInterval(() => this.#beat(), deps.heartbeatMs ?? HEARTBEAT_MS);
    this.#heartbeat.unref();
    this.#unsubscribe = [
      deps.bus.subscribe('desired', ({ agentId }) => void this.#sendDesired(agentId)),
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
      const { status, body, headers } = errorResponse(err, this.#deps.log);
      const text = JSON.stringify(body);
      const extra = Object.entries(headers)
        .map(([k, v]) => `${k}: ${v}\r\n`)
        .join('');
      socket.end(
        `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? 'Error'}\r\n${extra}` +
          `Content-Type: application/json\r\nContent-Length: ${Buffer.byteLength(text)}\r\nConnection: close\r\n\r\n${text}`,
      );
      return;
    }
    const a = agent;
    const p = principal;
    const proto =
      req.headers['x-forwarded-proto'] === 'https' || 'encrypted' in req.socket ? 'https' : 'http';
    const requestBase = `${proto}://${req.headers.host ?? 'localhost'}`;
    this.#wss.handleUpgrade(req, socket, head, (ws) => this.#accept(ws, a, p, requestBase));
  }

  #accept(ws: WebSocket, agent: AgentRow, principal: Principal, requestBase: string): void {
    const old = this.#byAgent.get(agent.id);
    if (old) old.ws.close(CLOSE_CODES.replaced, 'replaced by a newer connection of the same agent');
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
    };
    this.#byAgent.set(agent.id, conn);
    const log = this.#deps.log.child({ agent: agent.name });
    log.info('agent connected');
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
      queue = queue
        .then(() => this.#onMessage(conn, data as Buffer, isBinary))
        .catch((err) => {
          log.error({ err }, 'cannot handle agent message');
        });
    });
    ws.on('close', (code, reason) => {
      log.info({ code, reason: reason.toString() }, 'agent disconnected');
      if (this.#byAgent.get(agent.id) === conn) {
        this.#byAgent.delete(agent.id);
        void this.#deps.agents.setOffline(agent.id, this.#deps.now()).catch(() => {});
      }
    });
    ws.on('error', (err) => log.warn({ err }, 'agent socket error'));
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
    const { agents, deployments, bus, now } = this.#deps;
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
        await agents.recordObserved(conn.agent.id, msg.observed, now());
        for (const r of msg.unreported) await this.#finish(conn, r);
        const desired = await deployments.desiredFor(conn.agent.id);
        const caches = await this.#deps.caches.list(conn.agent.workspace_id);
        const base = this.#deps.baseUrl(conn.requestBase);
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
        return;
      }
      case 'progress': {
        const id = Number(msg.deploymentId);
        const d = await deployments.byId(conn.agent.workspace_id, id);
        if (!d || d.agent_id !== conn.agent.id) return;
        if (d.state === 'pending') {
          if (!(await deployments.markRunning(id, conn.agent.id, now()))) return;
        } else if (d.state !== 'running') {
          return;
        }
        await deployments.setStep(id, conn.agent.id, msg.step);
        bus.publish('deployment', {
          workspaceId: d.workspace_id,
          rolloutId: d.rollout_id,
          deploymentId: id,
          agent: conn.agent.name,
          state: 'running',
          step: msg.step,
          reason: null,
        });
        return;
      }
      case 'log': {
        const id = Number(msg.deploymentId);
        const d = await deployments.byId(conn.agent.workspace_id, id);
        if (!d || d.agent_id !== conn.agent.id) return;
        const rows = await this.#deps.logs.append(id, msg.lines);
        bus.publish('log', {
          rolloutId: d.rollout_id,
          deploymentId: id,
          agent: conn.agent.name,
          lines: rows.map((r) => ({ seq: r.seq, t: r.t, text: r.text })),
        });
        return;
      }
      case 'result': {
        await agents.recordObserved(conn.agent.id, msg.observed, now());
        await this.#finish(conn, msg.result);
        await this.#sendDesired(conn.agent.id);
        return;
      }
      case 'observed':
        await agents.recordObserved(conn.agent.id, msg.observed, now());
        return;
      case 'closure': {
        const d = await deployments.byId(conn.agent.workspace_id, Number(msg.deploymentId));
        if (!d || d.agent_id !== conn.agent.id || !this.#deps.closures) return;
        await this.#deps.closures.recordPart({
          workspaceId: d.workspace_id,
          root: d.store_path,
          paths: msg.paths,
          final: msg.final,
          now: now(),
        });
        return;
      }
      case 'confirm': {
        // The agent reached us over a new connection after switching: its network works.
        const d = await deployments.byId(conn.agent.workspace_id, Number(msg.deploymentId));
        if (d && d.agent_id === conn.agent.id && d.state === 'running') {
          this.#send(conn, { type: 'confirmed', deploymentId: msg.deploymentId });
        }
        return;
      }
    }
  }

  async #finish(conn: Connection, result: DeploymentResult): Promise<void> {
    const id = Number(result.deploymentId);
    const d = await this.#deps.deployments.byId(conn.agent.workspace_id, id);
    if (!d || d.agent_id !== conn.agent.id) return;
    // Logs sent before the result are written before it is announced.
    await this.#deps.logs.flush();
    const changed = await this.#deps.deployments.finish(id, conn.agent.id, result, this.#deps.now());
    this.#deps.logs.forget(id);
    if (!changed) return;
    this.#deps.bus.publish('deployment', {
      workspaceId: d.workspace_id,
      rolloutId: d.rollout_id,
      deploymentId: id,
      agent: conn.agent.name,
      state: result.state,
      step: result.step,
      reason: result.reason,
    });
  }

  async #sendDesired(agentId: number): Promise<void> {
    const conn = this.#byAgent.get(agentId);
    if (!conn?.helloDone) return;
    const desired = await this.#deps.deployments.desiredFor(agentId);
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
    for (const conn of this.#byAgent.values()) {
      if (!conn.alive) {
        conn.ws.terminate();
        continue;
      }
      conn.alive = false;
      conn.ws.ping();
    }
  }

  /** Closes every agent connection (they will reconnect elsewhere or after a restart). */
  async close(): Promise<void> {
    clearInterval(this.#heartbeat);
    for (const u of this.#unsubscribe) u();
    for (const conn of this.#byAgent.values())
      conn.ws.close(CLOSE_CODES.shuttingDown, 'server shutting down');
    await this.#deps.logs.flush();
    await new Promise<void>((resolve) => this.#wss.close(() => resolve()));
    const ids = [...this.#byAgent.keys()];
    this.#byAgent.clear();
    await Promise.all(ids.map((id) => this.#deps.agents.setOffline(id, this.#deps.now()).catch(() => {})));
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
  const scripts = d.rollback_script === null ? {} : (JSON.parse(d.rollback_script) as Record<string, string>);
  return {
    id: String(d.id),
    storePath: d.store_path,
    rollbackScript: Object.hasOwn(scripts, system) ? (scripts[system] ?? null) : null,
    exit4: d.exit4 === 'tolerate' ? 'tolerate' : 'fail',
    healthChecks:
      d.health_checks === null ? [] : (JSON.parse(d.health_checks) as DesiredDeployment['healthChecks']),
    confirmTimeoutSeconds: d.confirm_timeout,
    rollback: d.kind === 'rollback',
  };
}
