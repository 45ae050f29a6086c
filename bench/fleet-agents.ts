/**
 * One process of simulated agents for bench/fleet.ts. Each is the agent's own protocol code, an
 * {@link AgentSession} (connection, heartbeats, reconnect delays, deployment queue, numbered log
 * shipping, confirmation over a new connection, result outbox), given a fake machine: `observe`
 * reports what was "activated", and `deploy` goes through the real agent's steps without Nix
 * (realise, which takes `deployMs`; the closure report; set-profile; activate; confirm, which
 * drops the socket, reconnects and waits for `confirmed`; then the result).
 *
 * Driven over IPC by bench/fleet.ts; it is not meant to be run by hand.
 */
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { WebSocket } from 'ws';
import { AgentSession } from '../src/agent/agent-session.ts';
import type { SocketOutcome } from '../src/agent/agent-socket.ts';
import {
  type ClosurePath,
  type DeploymentResult,
  type Observed,
  type ServerMessage,
  serverMessageSchema,
} from '../src/protocol/agent-protocol.ts';

/** Commands from the orchestrator. */
export type WorkerCommand =
  | {
      cmd: 'start';
      /** Each agent, and the URL of the server (replica) it connects to. */
      agents: Array<{ name: string; token: string; server: string }>;
      /** Source address of this worker's sockets: one per worker keeps ephemeral ports plentiful. */
      localAddress: string;
      /** How long a simulated deployment's download (realise) takes, in ms. */
      deployMs: number;
      /**
       * Each agent starts at a random moment within this many ms of the command (a fleet that
       * boots together); from then on it is on its own, as a real agent is.
       */
      startWithinMs: number;
      /** The closure of the deployed store path, reported after "realising" it, as the real agent does. */
      closure: ClosurePath[];
    }
  | { cmd: 'stats'; reset?: boolean }
  | { cmd: 'stop' }
  | { cmd: 'peer'; url: string; count: number }
  | { cmd: 'peer-stop' };

/** What a worker answers to `stats`. */
export interface WorkerStats {
  /** Agents with a welcome on their current connection. */
  welcomed: number;
  /** Epoch ms at which each agent got its first deployment since the last reset. */
  received: number[];
  /** The same, with the deployment's id: [id, epoch ms] (for the staged runs' batch transitions). */
  receivedById: Array<[string, number]>;
  /** [deployment id, epoch ms] at which each agent's deployment returned its result, about to send it. */
  resultById: Array<[string, number]>;
  /** Deployments whose result went out since the last reset. */
  completed: number;
  /** Results the server acknowledged since the last reset. */
  acknowledged: number;
  /**
   * For each confirmation since the last reset: ms from its start (the real agent's confirm
   * step, right after activating) to `confirmed`, and the part of it until the old connection
   * was dropped (the agent first waits up to 1.5 s for the server to show it read the log lines).
   */
  confirmMs: number[];
  confirmDropMs: number[];
  /** Confirmations that timed out since the last reset. */
  unconfirmed: number;
  /** Deployments the server sent again after this agent had already finished them. */
  duplicates: number;
  /** Welcomes since the last reset, and connections that closed without one (failed attempts). */
  welcomes: number;
  failures: number;
  /** Why those attempts failed, with counts (the first words of the agent's own log line). */
  failureReasons: Record<string, number>;
  /** Epoch ms at which the last agent was welcomed. */
  lastWelcomeAt: number;
  /** Peer broadcast: epoch ms at which each peer socket received the broadcast. */
  peerReceived: number[];
  peerOpen: number;
  /** CPU time this worker process used so far, in ms (user + system). */
  cpuMs: number;
  /** This worker's event loop delay since the last reset, p99 and max in ms: agents that are late to read are the bench's fault. */
  loopDelayP99Ms: number;
  loopDelayMaxMs: number;
}

const PROFILE = '/nix/var/nix/profiles/system';

/** The machine one simulated agent pretends to be. */
class SimMachine {
  storePath: string | null = null;
  generation = 0;
  welcomed = false;
  /** When the confirmation under way started, until its old connection closes. */
  confirmingSince = 0;
  /** Deployments this agent finished: sent again, they are duplicates. */
  readonly finished = new Set<string>();
  /** The deployment ids this agent was told about, for `received`. */
  readonly seen = new Set<string>();

  constructor(readonly name: string) {}

  observed(): Observed {
    return {
      storePath: this.storePath,
      generation: this.generation === 0 ? null : this.generation,
      kind: this.storePath ? 'plain' : null,
      system: 'x86_64-linux',
      hostname: this.name,
      agentVersion: 'fleet-bench',
      nixVersion: 'nix (Nix) 2.8.0',
      profile: PROFILE,
    };
  }
}

let config: Extract<WorkerCommand, { cmd: 'start' }>;
/** One per agent, as each real agent has its own: thousands of listeners on one signal cost. */
const stops: AbortController[] = [];
let stopped = false;
const stats: WorkerStats = {
  welcomed: 0,
  received: [],
  receivedById: [],
  resultById: [],
  completed: 0,
  acknowledged: 0,
  confirmMs: [],
  confirmDropMs: [],
  unconfirmed: 0,
  duplicates: 0,
  welcomes: 0,
  failures: 0,
  failureReasons: {},
  lastWelcomeAt: 0,
  peerReceived: [],
  peerOpen: 0,
  cpuMs: 0,
  loopDelayP99Ms: 0,
  loopDelayMaxMs: 0,
};
const loop = monitorEventLoopDelay({ resolution: 10 });
loop.enable();
const peers: WebSocket[] = [];

function onMessage(m: SimMachine, msg: ServerMessage): void {
  let desired: string | undefined;
  if (msg.type === 'welcome') {
    if (!m.welcomed) stats.welcomed++;
    m.welcomed = true;
    stats.welcomes++;
    stats.lastWelcomeAt = Date.now();
    desired = msg.desired?.id;
  } else if (msg.type === 'desired') {
    desired = msg.desired?.id;
  }
  if (desired === undefined) return;
  // The real agent knows a finished deployment and does not run it again; the server should not
  // have asked, so count it.
  if (m.finished.has(desired)) stats.duplicates++;
  else if (!m.seen.has(desired)) {
    m.seen.add(desired);
    const now = Date.now();
    stats.received.push(now);
    stats.receivedById.push([desired, now]);
  }
}

function onClose(m: SimMachine, outcome: SocketOutcome): void {
  if (m.welcomed) stats.welcomed--;
  m.welcomed = false;
  if (m.confirmingSince) {
    stats.confirmDropMs.push(Date.now() - m.confirmingSince);
    m.confirmingSince = 0;
  }
  if (outcome.welcomed) return;
  stats.failures++;
  // "the server refused the connection (HTTP 503)", "cannot connect: connect ECONNREFUSED"
  const why = outcome.why
    .replace(/ to https?:\/\/\S+?(?=: )/, '')
    .replace(/(\(HTTP \d+\)).*/, '$1')
    .replace(/ [\d.]+:\d+/g, '')
    .slice(0, 100);
  stats.failureReasons[why] = (stats.failureReasons[why] ?? 0) + 1;
}

function startAgent(name: string, token: string, server: string): void {
  const m = new SimMachine(name);
  const session = new AgentSession({
    server,
    name,
    token,
    log: () => {},
    socket: { localAddress: config.localAddress, perMessageDeflate: false },
    observe: async () => m.observed(),
    onMessage: (msg) => onMessage(m, msg),
    onClose: (outcome) => onClose(m, outcome),
    onAcknowledged: (ids) => {
      stats.acknowledged += ids.size;
    },
    // The real agent's steps and lines (src/agent/run-deployment.ts), without Nix.
    deploy: async (d, ctx): Promise<DeploymentResult> => {
      ctx.step('realise');
      ctx.line(`$ nix-store --realise ${d.storePath}`);
      ctx.line(`copying path '${d.storePath}' from '${ctx.caches[0]?.url ?? 'the cache'}'...`);
      await new Promise((r) => setTimeout(r, config.deployMs));
      // As AgentDaemon#reportClosure: the realised closure, in parts that fit a message.
      ctx.send({ type: 'closure', deploymentId: d.id, paths: config.closure, final: true });
      ctx.line('kind: plain');
      ctx.line(`previous: ${m.storePath ?? '(none: first deployment to this profile)'}`);
      ctx.step('set-profile');
      m.storePath = d.storePath;
      m.generation++;
      ctx.step('activate');
      ctx.step('confirm');
      ctx.line(`confirming over a new connection (timeout ${d.confirmTimeoutSeconds}s)`);
      const t0 = Date.now();
      m.confirmingSince = t0;
      const confirmed = await ctx.confirm(d.id, d.confirmTimeoutSeconds * 1000);
      if (confirmed) stats.confirmMs.push(Date.now() - t0);
      else stats.unconfirmed++;
      m.finished.add(d.id);
      stats.completed++;
      stats.resultById.push([d.id, Date.now()]);
      if (!confirmed) {
        const reason = `lost connectivity: could not reach the server over a new connection within ${d.confirmTimeoutSeconds}s after activating`;
        ctx.line(`error in confirm: ${reason}`);
        return { deploymentId: d.id, state: 'failed', step: 'confirm', reason, rebootRequired: false };
      }
      ctx.line('the server confirmed the deployment');
      ctx.step('done');
      ctx.line(`deployed ${d.storePath}`);
      return { deploymentId: d.id, state: 'succeeded', step: null, reason: null, rebootRequired: false };
    },
  });
  const stop = new AbortController();
  stops.push(stop);
  void session.run(stop.signal);
}

function start(): void {
  // No pacing but the start times: each agent connects when its machine "boots", and from then
  // on reconnects as the real agent does (backoff, Retry-After, going-away).
  for (const { name, token, server } of config.agents) {
    const at = Math.round(Math.random() * config.startWithinMs);
    setTimeout(() => {
      if (!stopped) startAgent(name, token, server);
    }, at);
  }
}

function peer(url: string, count: number): void {
  for (let i = 0; i < count; i++) {
    const ws = new WebSocket(url, { localAddress: config.localAddress, perMessageDeflate: false });
    ws.on('open', () => stats.peerOpen++);
    ws.on('message', (data) => {
      // The same work per message as an agent: parse and validate.
      serverMessageSchema.safeParse(JSON.parse(String(data)));
      stats.peerReceived.push(Date.now());
    });
    ws.on('error', () => {});
    ws.on('close', () => stats.peerOpen--);
    peers.push(ws);
  }
}

process.on('message', (m: WorkerCommand) => {
  switch (m.cmd) {
    case 'start':
      config = m;
      start();
      return;
    case 'stats': {
      const cpu = process.cpuUsage();
      stats.cpuMs = Math.round((cpu.user + cpu.system) / 1000);
      stats.loopDelayP99Ms = Math.round(loop.percentile(99) / 1e6);
      stats.loopDelayMaxMs = Math.round(loop.max / 1e6);
      process.send!(stats);
      if (m.reset) {
        stats.received = [];
        stats.receivedById = [];
        stats.resultById = [];
        stats.peerReceived = [];
        stats.confirmMs = [];
        stats.confirmDropMs = [];
        stats.completed = 0;
        stats.acknowledged = 0;
        stats.unconfirmed = 0;
        stats.welcomes = 0;
        stats.failures = 0;
        stats.failureReasons = {};
        loop.reset();
      }
      return;
    }
    case 'stop':
      stopped = true;
      for (const s of stops) s.abort();
      return;
    case 'peer':
      peer(m.url, m.count);
      return;
    case 'peer-stop':
      for (const ws of peers) ws.terminate();
      setTimeout(() => process.exit(0), 100);
      return;
  }
});
process.on('disconnect', () => process.exit(0));
