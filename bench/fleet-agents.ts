/**
 * One process of simulated agents for bench/fleet.ts: real WebSocket clients with real agent
 * tokens, speaking the real agent protocol (hello, progress, log, result), with the real agent's
 * jittered reconnect backoff. No Nix: each "deployment" succeeds after a set delay.
 *
 * Driven over IPC by bench/fleet.ts; it is not meant to be run by hand.
 */
import { WebSocket } from 'ws';
import { Backoff, sleep } from '../src/lib/backoff.ts';
import {
  AGENT_PROTOCOL_VERSION,
  AGENT_WS_PATH,
  type DesiredDeployment,
  type Observed,
  serverMessageSchema,
} from '../src/protocol/agent-protocol.ts';

/** Commands from the orchestrator. */
export type WorkerCommand =
  | {
      cmd: 'start';
      server: string;
      agents: Array<{ name: string; token: string }>;
      /** Source address of this worker's sockets: one per worker keeps ephemeral ports plentiful. */
      localAddress: string;
      /** How long a simulated deployment takes, in ms. */
      deployMs: number;
      /** Handshakes in flight at once, per worker, at the first connect (a fleet does not boot in one ms). */
      connectConcurrency: number;
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
  /** Deployments reported done since the last reset. */
  completed: number;
  /** Deployments the server sent again after this agent had already reported them done. */
  duplicates: number;
  /** Connections opened since the last reset, and failed attempts. */
  connects: number;
  failures: number;
  /** Epoch ms at which the last agent was welcomed. */
  lastWelcomeAt: number;
  /** Peer broadcast: epoch ms at which each peer socket received the broadcast. */
  peerReceived: number[];
  peerOpen: number;
}

const PROFILE = '/nix/var/nix/profiles/system';

class SimAgent {
  ws: WebSocket | undefined;
  welcomed = false;
  /** The deployment this agent has done last, as the real agent's journal remembers it. */
  doneId: string | undefined;
  runningId: string | undefined;
  storePath: string | null = null;
  generation = 0;
  readonly backoff = new Backoff({ initialMs: 500, maxMs: 30_000 });
  /** Told once the first connection attempt is settled (welcomed or closed). */
  settled: (() => void) | undefined;

  constructor(
    readonly name: string,
    readonly token: string,
  ) {}
}

let stopped = false;
let config: Extract<WorkerCommand, { cmd: 'start' }>;
const agents: SimAgent[] = [];
const stats: WorkerStats = {
  welcomed: 0,
  received: [],
  completed: 0,
  duplicates: 0,
  connects: 0,
  failures: 0,
  lastWelcomeAt: 0,
  peerReceived: [],
  peerOpen: 0,
};
const peers: WebSocket[] = [];

function observed(a: SimAgent): Observed {
  return {
    storePath: a.storePath,
    generation: a.generation === 0 ? null : a.generation,
    kind: 'plain',
    system: 'x86_64-linux',
    hostname: a.name,
    agentVersion: 'fleet-bench',
    nixVersion: 'nix (Nix) 2.8.0',
    profile: PROFILE,
  };
}

function send(a: SimAgent, msg: unknown): void {
  if (a.ws?.readyState === WebSocket.OPEN) a.ws.send(JSON.stringify(msg));
}

function onDesired(a: SimAgent, d: DesiredDeployment | null): void {
  if (!d) return;
  if (d.id === a.doneId) {
    // The real agent knows it from its journal and does not run it again; the server should not
    // have asked, so count it.
    stats.duplicates++;
    return;
  }
  if (d.id === a.runningId) return;
  a.runningId = d.id;
  stats.received.push(Date.now());
  // Answer after this turn's other messages are read: a real agent answers from its own machine,
  // and here a hundred agents' answers must not delay the next agent's receipt in this process.
  setImmediate(() => {
    send(a, { type: 'progress', deploymentId: d.id, step: 'realise' });
    send(a, { type: 'log', deploymentId: d.id, lines: [{ t: Date.now(), text: `copying ${d.storePath}` }] });
  });
  setTimeout(() => {
    send(a, { type: 'progress', deploymentId: d.id, step: 'activate' });
    a.storePath = d.storePath;
    a.generation++;
    send(a, { type: 'log', deploymentId: d.id, lines: [{ t: Date.now(), text: 'activated' }] });
    send(a, {
      type: 'result',
      result: { deploymentId: d.id, state: 'succeeded', step: null, reason: null, rebootRequired: false },
      observed: observed(a),
    });
    a.doneId = d.id;
    a.runningId = undefined;
    stats.completed++;
  }, config.deployMs);
}

/** One connection: resolves when it closes, with whether it was welcomed and any Retry-After. */
function connectOnce(a: SimAgent): Promise<{ welcomed: boolean; retryAfterMs: number; spreadMs: number }> {
  return new Promise((resolve) => {
    const url = `${config.server.replace(/^http/, 'ws')}${AGENT_WS_PATH}?agent=${encodeURIComponent(a.name)}`;
    const ws = new WebSocket(url, {
      headers: { Authorization: `Bearer ${a.token}` },
      handshakeTimeout: 15_000,
      localAddress: config.localAddress,
      perMessageDeflate: false,
    });
    a.ws = ws;
    let welcomed = false;
    let retryAfterMs = 0;
    let spreadMs = 0;
    // As the real agent: a busy server's Retry-After is a floor under the backoff.
    ws.on('unexpected-response', (_req, res) => {
      const retryAfter = Number(res.headers['retry-after']);
      if (Number.isInteger(retryAfter) && retryAfter > 0) retryAfterMs = Math.min(retryAfter, 300) * 1000;
      res.resume();
      ws.terminate();
    });
    ws.on('open', () => {
      stats.connects++;
      send(a, {
        type: 'hello',
        protocol: AGENT_PROTOCOL_VERSION,
        observed: observed(a),
        running: a.runningId ?? null,
        unreported: [],
      });
    });
    ws.on('message', (data) => {
      const parsed = serverMessageSchema.safeParse(JSON.parse(String(data)));
      if (!parsed.success) throw new Error(`bad server message: ${String(data).slice(0, 200)}`);
      const msg = parsed.data;
      if (msg.type === 'welcome') {
        welcomed = true;
        a.welcomed = true;
        stats.welcomed++;
        stats.lastWelcomeAt = Date.now();
        a.settled?.();
        onDesired(a, msg.desired);
      } else if (msg.type === 'desired') {
        onDesired(a, msg.desired);
      } else if (msg.type === 'going-away') {
        spreadMs = msg.reconnectWithinSeconds * 1000;
      }
    });
    ws.on('error', () => {});
    ws.on('close', () => {
      if (a.welcomed) stats.welcomed--;
      a.welcomed = false;
      a.ws = undefined;
      a.settled?.();
      resolve({ welcomed, retryAfterMs, spreadMs });
    });
  });
}

async function runAgent(a: SimAgent): Promise<void> {
  while (!stopped) {
    const { welcomed, retryAfterMs, spreadMs } = await connectOnce(a);
    if (stopped) return;
    if (welcomed) a.backoff.reset();
    else stats.failures++;
    // As the real agent: a server going away says over how long to come back.
    await sleep(
      spreadMs > 0 ? Math.round(Math.random() * spreadMs) : Math.max(a.backoff.next(), retryAfterMs),
    );
  }
}

async function start(): Promise<void> {
  for (const { name, token } of config.agents) agents.push(new SimAgent(name, token));
  // The first connect: at most `connectConcurrency` handshakes in flight; each agent then runs its
  // own reconnect loop for good.
  let next = 0;
  const launch = async () => {
    while (next < agents.length && !stopped) {
      const a = agents[next++]!;
      await new Promise<void>((resolve) => {
        a.settled = resolve;
        void runAgent(a);
      });
      a.settled = undefined;
    }
  };
  await Promise.all(Array.from({ length: config.connectConcurrency }, launch));
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
      void start();
      return;
    case 'stats':
      process.send!({ ...stats, received: stats.received, peerReceived: stats.peerReceived });
      if (m.reset) {
        stats.received = [];
        stats.peerReceived = [];
        stats.completed = 0;
        stats.connects = 0;
        stats.failures = 0;
      }
      return;
    case 'stop':
      stopped = true;
      for (const a of agents) a.ws?.close();
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
