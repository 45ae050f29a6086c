/**
 * Fleet scale: one `cairn server` (embedded SQLite, its own process) and N simulated agents, each
 * the agent's own protocol code (an AgentSession: real WebSocket clients with real tokens, the
 * real heartbeats, reconnect delays, numbered log lines, closure report and confirmation over a
 * new connection) with a fake machine, in separate worker processes; see bench/fleet-agents.ts.
 * Measures, in one run:
 *
 *   1. connect: the agents start at random moments within --start-within seconds (a fleet
 *      booting together); time until all N are connected and online, server RSS before and after;
 *   2. fan-out: one rollout to all N; when each agent received its deployment (p50, p99, max),
 *      how long each confirmation took (the old socket dropped, a new one welcomed, `confirmed`
 *      received) and when the server recorded the rollout complete;
 *   3. reconnect storm: the server is stopped (SIGTERM) and started again; the outage (until the
 *      new server's `/healthz` answers 200), time until all N are back, the longest `/healthz`
 *      silence, peak CPU and RSS, and that no deployment was lost or sent again;
 *   4. the peer: a minimal `ws` server broadcasting one message of the same size to N sockets
 *      held by the same worker processes, and Cairn's ratio to it.
 *
 * With `--staged 1%,10%,50%,100%` it measures staged rollouts instead of 2 to 4: after the
 * connect, `--rollouts` rollouts one after the other, each of a new store path to all N agents
 * with a `rollout` policy of those batches, bake 0 and a failure threshold that cannot trip,
 * posted to the API as `cairn deploy activate` posts deploy.json; for each batch transition, the
 * delay from the last result of a batch to the first `desired` of the next (see stagedRuns).
 *
 * With `--replicas N --database postgres://…` the server is N `cairn server` replicas sharing a
 * fresh PostgreSQL database, the agents spread over them round-robin, each connecting straight to
 * its replica's URL (no load balancer); the rollouts are posted through replica 0 and reach the
 * agents of the others through PostgreSQL's LISTEN/NOTIFY. The storm stops and starts all of them.
 *
 * With `--metrics fleet` or `--metrics per-agent` it measures `/metrics` instead of 3 and 4: each
 * server also serves its metrics on an address of its own (`--metrics-listen`; with
 * `--metrics-per-agent` for `per-agent`), and `--scrapes` scrapes of replica 0's `/metrics`, one
 * at a time and `--scrape-gap` ms apart, are timed after the connect (every agent online, no
 * deployment yet) and again after the fan-out (a deployment per agent).
 *
 * The last line of output is one JSON object with the figures. `--help` lists the options.
 */
import { type ChildProcess, fork, spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { closeSync, openSync, readFileSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { Agent as HttpAgent, get as httpGet } from 'node:http';
import { cpus, loadavg, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import pg from 'pg';
import { narinfoText, syntheticPath } from '../test/helpers/binary-cache.ts';
import { freePort } from '../test/helpers/server-process.ts';
import type { WorkerCommand, WorkerStats } from './fleet-agents.ts';

const USAGE = `Usage: npm run bench:fleet -- [options]

Starts cairn server and simulated agents, and measures connect, fan-out, reconnect storm and a
minimal ws peer (or staged rollouts); see docs/performance.md, "Fleet scale". The last line of
output is one JSON object with the figures.

Options:
  --agents N           simulated agents (default 10000)
  --workers N          worker processes holding them (default: one per 2,500 agents, at most 4)
  --deploy-ms MS       how long each simulated download takes (default 1000)
  --start-within S     agents start at random moments within S seconds (default 10)
  --replicas N         cairn server replicas, 1 to 8 (default 1); more than 1 needs --database.
                       The replicas share one fresh PostgreSQL database; the agents are spread
                       over them round-robin, each connecting straight to its replica's URL (no
                       load balancer); rollouts are posted through replica 0; the reconnect
                       storm stops and starts every replica
  --database URL       postgres://USER[:PASSWORD]@HOST:PORT/DB: the bench creates a fresh
                       database on that server (cairn_bench_...), and drops it at the end unless
                       --keep-data (default: SQLite in the server's data dir; --replicas 1 only)
  --staged SIZES       staged rollouts instead of fan-out, storm and peer: batch sizes such as
                       1%,10%,50%,100%
  --rollouts N         with --staged, how many rollouts one after the other (default 5)
  --metrics MODE       time GET /metrics instead of the reconnect storm and the peer: after the
                       connect and after the fan-out, --scrapes scrapes one at a time of
                       replica 0's metrics address (--metrics-listen); MODE is fleet (the
                       default series) or per-agent (with --metrics-per-agent)
  --scrapes N          with --metrics, scrapes timed each time (default 40)
  --scrape-gap MS      with --metrics, the pause between two scrapes (default 250: 40 scrapes
                       then span more than one 10-second heartbeat round of the agents)
  --keep-data          keep the data dirs (and the PostgreSQL database)
  -h, --help           this text

Environment: FLEET_NO_PIN=1 runs without taskset; FLEET_SERVER_FLAGS='--cpu-prof ...' adds node
flags to the server processes.
`;

/** Ends the bench on a bad option: the problem, a pointer to --help, exit 2. */
function usageError(message: string): never {
  process.stderr.write(`bench:fleet: ${message} (see --help)\n`);
  process.exit(2);
}

let parsed: ReturnType<typeof parseOptions>;
function parseOptions() {
  return parseArgs({
    options: {
      agents: { type: 'string', default: '10000' },
      workers: { type: 'string' },
      'deploy-ms': { type: 'string', default: '1000' },
      'start-within': { type: 'string', default: '10' },
      'keep-data': { type: 'boolean', default: false },
      staged: { type: 'string' },
      rollouts: { type: 'string', default: '5' },
      metrics: { type: 'string' },
      scrapes: { type: 'string', default: '40' },
      'scrape-gap': { type: 'string', default: '250' },
      replicas: { type: 'string', default: '1' },
      database: { type: 'string' },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
}
try {
  parsed = parseOptions();
} catch (err) {
  usageError((err as Error).message);
}
const { values } = parsed;
if (values.help) {
  process.stdout.write(USAGE);
  process.exit(0);
}
const AGENTS = Number(values.agents);
const WORKERS = Number(values.workers ?? Math.max(1, Math.min(4, Math.ceil(AGENTS / 2500))));
const DEPLOY_MS = Number(values['deploy-ms']);
const START_WITHIN_S = Number(values['start-within']);
if (!Number.isInteger(AGENTS) || AGENTS < 1)
  usageError(`--agents: expected a positive integer, got ${values.agents}`);
if (!Number.isInteger(WORKERS) || WORKERS < 1)
  usageError(`--workers: expected a positive integer, got ${values.workers}`);
if (!Number.isInteger(DEPLOY_MS) || DEPLOY_MS < 0)
  usageError(`--deploy-ms: expected a whole number of ms, got ${values['deploy-ms']}`);
if (!Number.isFinite(START_WITHIN_S) || START_WITHIN_S < 0)
  usageError(`--start-within: expected a number of seconds, got ${values['start-within']}`);

const STAGED = values.staged?.split(',').map((b) => b.trim());
const ROLLOUTS = Number(values.rollouts);
if (STAGED !== undefined && (STAGED.length < 2 || STAGED.some((b) => !/^\d+(\.\d+)?%$|^\d+$/.test(b))))
  usageError(`--staged: expected two or more batch sizes such as 1%,10%,50%,100%, got ${values.staged}`);
if (!Number.isInteger(ROLLOUTS) || ROLLOUTS < 1)
  usageError(`--rollouts: expected a positive integer, got ${values.rollouts}`);

const METRICS = values.metrics;
if (METRICS !== undefined && METRICS !== 'fleet' && METRICS !== 'per-agent')
  usageError(`--metrics: expected fleet or per-agent, got ${METRICS}`);
if (METRICS !== undefined && STAGED !== undefined)
  usageError('--metrics and --staged: choose one (both replace the reconnect storm)');
const SCRAPES = /^\d+$/.test(values.scrapes) ? Number(values.scrapes) : Number.NaN;
if (!(SCRAPES >= 1 && SCRAPES <= 10_000))
  usageError(`--scrapes: expected a whole number from 1 to 10000, got ${values.scrapes}`);

const SCRAPE_GAP_MS = /^\d+$/.test(values['scrape-gap']) ? Number(values['scrape-gap']) : Number.NaN;
if (!(SCRAPE_GAP_MS >= 0 && SCRAPE_GAP_MS <= 60_000))
  usageError(`--scrape-gap: expected a whole number of ms from 0 to 60000, got ${values['scrape-gap']}`);

const REPLICAS = /^\d+$/.test(values.replicas) ? Number(values.replicas) : Number.NaN;
if (!(REPLICAS >= 1 && REPLICAS <= 8))
  usageError(`--replicas: expected a whole number from 1 to 8, got ${values.replicas}`);
const DATABASE = values.database;
if (DATABASE !== undefined && (!/^postgres(ql)?:\/\/[^/]/.test(DATABASE) || !URL.canParse(DATABASE)))
  usageError(`--database: expected a postgres://USER@HOST:PORT/DB URL, got ${DATABASE}`);
if (REPLICAS > 1 && DATABASE === undefined)
  usageError(
    `--replicas ${REPLICAS}: replicas share one PostgreSQL database; add --database postgres://USER@HOST:PORT/DB (the bench creates a fresh database there)`,
  );
if (REPLICAS > 1 && AGENTS < REPLICAS)
  usageError(`--replicas ${REPLICAS}: needs at least as many agents (--agents ${AGENTS})`);

const MAIN = fileURLToPath(new URL('../src/main.ts', import.meta.url));
const WORKER = fileURLToPath(new URL('./fleet-agents.ts', import.meta.url));
const PEER = fileURLToPath(new URL('./fleet-peer.ts', import.meta.url));
const WS = 'default';
/**
 * Real agents run on machines of their own. Here they share the machine with the server, so the
 * server (and the peer in its turn) gets CPU 0 to itself, and the agents and this process the
 * others: the agents' CPU must not count against the server, nor the server starve the agents.
 * Replicas get a CPU each (1 to N-1 after replica 0's CPU 0) when the machine has more CPUs than
 * replicas, and otherwise share CPU 0: then they share what one server had.
 */
const PIN = cpus().length >= 2 && process.platform === 'linux' && !process.env.FLEET_NO_PIN;
const OWN_CPUS = cpus().length > REPLICAS;
const SERVER_CPUS = '0';
const REPLICA_CPUS = Array.from({ length: REPLICAS }, (_, i) => (OWN_CPUS ? String(i) : SERVER_CPUS));
const FIRST_AGENT_CPU = OWN_CPUS ? REPLICAS : 1;
const AGENT_CPUS = `${FIRST_AGENT_CPU}-${cpus().length - 1}`;

/** Moves a process (all its threads) onto these CPUs. */
function pin(pid: number, list: string): void {
  if (!PIN) return;
  const r = spawnSync('taskset', ['-a', '-c', '-p', list, String(pid)], { encoding: 'utf8' });
  if (r.status !== 0)
    throw new Error(`taskset: ${r.stderr || r.error?.message} (set FLEET_NO_PIN=1 to run unpinned)`);
}
/** Extra node flags for the server, to profile it: FLEET_SERVER_FLAGS='--cpu-prof --cpu-prof-dir=/tmp/prof'. */
const SERVER_FLAGS = (process.env.FLEET_SERVER_FLAGS ?? '').split(' ').filter(Boolean);
const BENCH_START = Date.now();
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const say = (s: string) => process.stdout.write(`${s}\n`);

// ---- the server process -------------------------------------------------------------------

interface Server {
  readonly child: ChildProcess;
  readonly pid: number;
  readonly startedAt: number;
}

/** Where one server (or replica) listens and keeps its files. */
interface Replica {
  readonly index: number;
  readonly port: number;
  /** With --metrics: the port of its metrics address. */
  readonly metricsPort: number | undefined;
  readonly url: string;
  readonly dataDir: string;
  readonly logFile: string;
}

/** How the output names a server: "the server" alone, "replica 1" among several. */
const serverName = (r: Replica) => (REPLICAS === 1 ? 'the server' : `replica ${r.index}`);

/** The fresh PostgreSQL database the servers share (with --database), set by main(). */
let databaseUrl: string | undefined;

async function startServer(r: Replica): Promise<Server> {
  const startedAt = Date.now();
  const log = openSync(r.logFile, 'a');
  const child = spawn(
    process.execPath,
    [
      ...SERVER_FLAGS,
      '--import',
      'tsx',
      MAIN,
      'server',
      '--listen',
      `127.0.0.1:${r.port}`,
      '--data-dir',
      r.dataDir,
      ...(databaseUrl === undefined ? [] : ['--database', databaseUrl]),
      ...(r.metricsPort === undefined ? [] : ['--metrics-listen', `127.0.0.1:${r.metricsPort}`]),
      ...(METRICS === 'per-agent' ? ['--metrics-per-agent'] : []),
    ],
    // Straight into the file: a pipe through this process would slow the server when this
    // process is busy.
    { stdio: ['ignore', log, log] },
  );
  pin(child.pid!, REPLICA_CPUS[r.index]!);
  closeSync(log);
  child.on('exit', (code, signal) => {
    if (stopping.has(child)) return;
    const tail = readFileSync(r.logFile, 'utf8').trimEnd().split('\n').slice(-12).join('\n');
    serverDied = `${serverName(r)} exited unasked (${signal ?? `exit ${code}`}); the end of its log:\n${tail}`;
  });
  return { child, pid: child.pid!, startedAt };
}

/** Servers being stopped on purpose, and why the server died when it was not. */
const stopping = new WeakSet<ChildProcess>();
let serverDied: string | undefined;

/** Throws once the server has died: every wait checks it, so that a crash ends the bench at once. */
function checkServer(): void {
  if (serverDied) throw new Error(serverDied);
}

async function waitHealthy(url: string, ms = 30_000): Promise<void> {
  const deadline = Date.now() + ms;
  for (;;) {
    try {
      if ((await fetch(`${url}/healthz`)).ok) return;
    } catch {}
    if (Date.now() > deadline) throw new Error(`${url}/healthz did not answer within ${ms} ms`);
    await sleep(50);
  }
}

/** Stops the server; resolves with how it exited ("exit 0" when it stopped cleanly). */
async function stopServer(s: Server, signal: NodeJS.Signals = 'SIGTERM'): Promise<string> {
  // Exited already, by itself or killed by a signal (exitCode stays null then).
  if (s.child.exitCode !== null || s.child.signalCode !== null) return 'already exited';
  const exited = once(s.child, 'exit');
  stopping.add(s.child);
  s.child.kill(signal);
  const [code, sig] = (await exited) as [number | null, NodeJS.Signals | null];
  return sig ?? `exit ${code}`;
}

/** Resident set size of a process, in bytes. */
async function rss(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  const m = /^VmRSS:\s+(\d+) kB$/m.exec(status);
  return m ? Number(m[1]) * 1024 : 0;
}

/** CPU time a process used so far, in ms (user + system). */
async function cpuMs(pid: number): Promise<number> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return ((Number(fields[11]) + Number(fields[12])) * 1000) / 100; // clock ticks of 10 ms
}

/**
 * One GET on a kept-alive connection, as a load balancer's health check: its status, whether the
 * connection was reused, and how long it took (5 s at most).
 */
const probeAgent = new HttpAgent({ keepAlive: true, maxSockets: 1 });
function probe(url: string, keepAlive: boolean): Promise<{ status: number; reused: boolean; ms: number }> {
  const start = Date.now();
  return new Promise((resolve, reject) => {
    const req = httpGet(url, { agent: keepAlive ? probeAgent : false, timeout: 5000 }, (res) => {
      res.resume();
      res.on('end', () =>
        resolve({ status: res.statusCode ?? 0, reused: req.reusedSocket, ms: Date.now() - start }),
      );
    });
    req.on('timeout', () => req.destroy(new Error('no answer within 5 s')));
    req.on('error', reject);
  });
}

/** Probes /healthz every 100 ms until stopped; the longest time without a 200, and what failed. */
function startProber(url: string, keepAlive: boolean, since: number) {
  let lastOk = Date.now();
  let longestSilence = 0;
  let longestAt = 0;
  const errors = new Map<string, number>();
  let probing = true;
  const running = (async () => {
    while (probing) {
      try {
        const { status } = await probe(`${url}/healthz`, keepAlive);
        const now = Date.now();
        if (status === 200) {
          if (now - lastOk > longestSilence) {
            longestSilence = now - lastOk;
            longestAt = now - since;
          }
          lastOk = now;
        } else {
          errors.set(`HTTP ${status}`, (errors.get(`HTTP ${status}`) ?? 0) + 1);
        }
      } catch (err) {
        const why = (err as Error).message;
        errors.set(why, (errors.get(why) ?? 0) + 1);
      }
      await sleep(100);
    }
    longestSilence = Math.max(longestSilence, Date.now() - lastOk);
  })();
  return {
    async stop() {
      probing = false;
      await running;
      const failed = [...errors].map(([why, n]) => `${n}x ${why}`).join(', ');
      return {
        longestSilence,
        summary: `ending ${longestAt} ms after the stop${failed ? `; failed: ${failed}` : ''}`,
      };
    },
  };
}

/**
 * One prober per server: the longest silence of any (the figure), each one's, and what failed,
 * named by replica when there are several.
 */
function startProbers(replicas: readonly Replica[], keepAlive: boolean, since: number) {
  const probers = replicas.map((r) => startProber(r.url, keepAlive, since));
  return {
    async stop() {
      const each = await Promise.all(probers.map((p) => p.stop()));
      return {
        longestSilence: Math.max(...each.map((e) => e.longestSilence)),
        perReplica: each.map((e) => e.longestSilence),
        summary:
          each.length === 1
            ? each[0]!.summary
            : each.map((e, i) => `replica ${i}: ${e.longestSilence} ms, ${e.summary}`).join('; '),
      };
    },
  };
}

// ---- the API ------------------------------------------------------------------------------

let base = '';
let admin = '';
/** The servers' pids, for the staged runs' CPU figures. */
let serverPids: number[] = [];
/** CPU time all servers used so far, in ms. */
async function serversCpuMs(): Promise<number> {
  return (await Promise.all(serverPids.map(cpuMs))).reduce((a, b) => a + b, 0);
}

async function api<T>(method: string, path: string, body?: unknown): Promise<T> {
  const res = await fetch(`${base}/api/v1/workspaces/${WS}${path}`, {
    method,
    headers: { Authorization: `Bearer ${admin}`, 'Content-Type': 'application/json' },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  const text = await res.text();
  if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${text.slice(0, 500)}`);
  return (text ? JSON.parse(text) : undefined) as T;
}

interface Deployment {
  id: number;
  agent: string;
  state: string;
  step?: string | null;
  reason?: string | null;
}

/** Where a rollout's deployments are, as the server records them: counts by state, step and reason. */
async function rolloutStates(id: number): Promise<string> {
  const r = await api<{ deployments: Deployment[] }>('GET', `/rollouts/${id}`);
  const counts = new Map<string, number>();
  for (const d of r.deployments) {
    const k = `${d.state}${d.step ? ` at ${d.step}` : ''}${d.reason ? ` (${d.reason.slice(0, 80)})` : ''}`;
    counts.set(k, (counts.get(k) ?? 0) + 1);
  }
  return [...counts].map(([k, n]) => `${n}x ${k}`).join(', ');
}

/** A new synthetic store path, pushed to the cache `main` (NAR and narinfo). */
async function uploadPath(label: string): Promise<ReturnType<typeof syntheticPath>> {
  const path = syntheticPath('fleet-system', label);
  for (const [file, body] of [
    [`nar/${path.narFile}`, path.nar],
    [`${path.hashPart}.narinfo`, narinfoText(path.fields)],
  ] as const) {
    const res = await fetch(`${base}/cache/main/${file}`, {
      method: 'PUT',
      headers: { Authorization: `Bearer ${admin}` },
      body,
    });
    if (res.status !== 201) throw new Error(`PUT ${file}: ${res.status} ${await res.text()}`);
  }
  return path;
}

// ---- workers ------------------------------------------------------------------------------

interface Worker {
  readonly child: ChildProcess;
  stats(reset: boolean): Promise<WorkerStats>;
  send(cmd: WorkerCommand): void;
}

function startWorker(): Worker {
  const child = fork(WORKER, [], {
    execArgv: ['--import', 'tsx'],
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  pin(child.pid!, AGENT_CPUS);
  const waiting: Array<(s: WorkerStats) => void> = [];
  child.on('message', (m) => waiting.shift()?.(m as WorkerStats));
  return {
    child,
    send: (cmd) => child.send(cmd),
    stats: (reset) =>
      new Promise((resolve) => {
        waiting.push(resolve);
        child.send({ cmd: 'stats', reset } satisfies WorkerCommand);
      }),
  };
}

async function allStats(workers: Worker[], reset = false): Promise<WorkerStats[]> {
  return await Promise.all(workers.map((w) => w.stats(reset)));
}

const sum = (xs: WorkerStats[], f: (s: WorkerStats) => number) => xs.reduce((a, s) => a + f(s), 0);

/** Polls the workers until `done` holds; returns the last stats. */
async function until(
  workers: Worker[],
  what: string,
  done: (s: WorkerStats[]) => boolean,
  timeoutMs: number,
  every = 100,
): Promise<WorkerStats[]> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const s = await allStats(workers);
    if (done(s)) return s;
    checkServer();
    if (Date.now() > deadline) {
      throw new Error(
        `${what}: not done after ${timeoutMs} ms (welcomed ${sum(s, (x) => x.welcomed)}, received ${sum(s, (x) => x.received.length)}, completed ${sum(s, (x) => x.completed)})`,
      );
    }
    await sleep(every);
  }
}

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;
}

/**
 * Times `--scrapes` GETs of /metrics one after the other, `--scrape-gap` ms apart (each from the
 * request to the last byte of the answer, as Prometheus waits for it), and prints p50, p99 and
 * max with the answer's size. The gap spreads them over the server's periodic work (heartbeats,
 * the rollout tick), which a scrape every 15 s meets at random moments. With each scrape a GET of
 * `healthUrl` (the same server's `/healthz`, which does nothing) is timed at the same moment: a
 * slow scrape whose `/healthz` was as slow waited for the server's one thread, not for its own work.
 */
async function timeScrapes(url: string, when: string, healthUrl: string) {
  const ms: number[] = [];
  const health: number[] = [];
  /** Per scrape: its time less that of the /healthz sent with it. */
  const own: number[] = [];
  let bytes = 0;
  let series = 0;
  for (let i = 0; i < SCRAPES; i++) {
    if (i > 0) await sleep(SCRAPE_GAP_MS);
    checkServer();
    const start = performance.now();
    const [scraped, healthMs] = await Promise.all([
      fetch(url).then(async (res) => ({ res, text: await res.text(), ms: performance.now() - start })),
      fetch(healthUrl).then(async (res) => {
        await res.arrayBuffer();
        return performance.now() - start;
      }),
    ]);
    const { res, text } = scraped;
    ms.push(scraped.ms);
    health.push(healthMs);
    own.push(Math.max(0, scraped.ms - healthMs));
    if (!res.ok) throw new Error(`GET ${url}: ${res.status} ${text.slice(0, 300)}`);
    bytes = Buffer.byteLength(text);
    series = text.split('\n').filter((l) => l !== '' && !l.startsWith('#')).length;
  }
  for (const list of [ms, health, own]) list.sort((a, b) => a - b);
  const figures = {
    p50: round(percentile(ms, 50), 1),
    p99: round(percentile(ms, 99), 1),
    max: round(ms[ms.length - 1]!, 1),
    healthP50: round(percentile(health, 50), 1),
    healthMax: round(health[health.length - 1]!, 1),
    ownMax: round(own[own.length - 1]!, 1),
    bytes,
    series,
  };
  say(
    `metrics (${METRICS}) ${when}: ${SCRAPES} scrapes of ${url}, ${SCRAPE_GAP_MS} ms apart: p50 ${figures.p50} ms, p99 ${figures.p99} ms, max ${figures.max} ms (/healthz sent with each: p50 ${figures.healthP50} ms, max ${figures.healthMax} ms; a scrape's time less its /healthz's, max ${figures.ownMax} ms); ${series} series, ${(bytes / 1024).toFixed(0)} KiB; load average ${loadavg()
      .map((l) => l.toFixed(2))
      .join(' ')}`,
  );
  return figures;
}

function spread(times: number[], t0: number) {
  const d = times.map((t) => t - t0).sort((a, b) => a - b);
  return { p50: percentile(d, 50), p99: percentile(d, 99), max: d[d.length - 1] ?? Number.NaN };
}

// ---- PostgreSQL ---------------------------------------------------------------------------

/** The bench's own database on the PostgreSQL server of --database, and a connection to watch it. */
interface BenchDatabase {
  readonly name: string;
  readonly url: string;
  /** CPU time (ms) of each PostgreSQL backend serving the bench's database now, by pid; empty when PostgreSQL runs on another machine. */
  backendsCpu(): Promise<Map<number, number>>;
  /** Closes the connection, and drops the database unless it is kept. */
  close(keep: boolean): Promise<void>;
}

async function createBenchDatabase(adminUrl: string): Promise<BenchDatabase> {
  const client = new pg.Client({ connectionString: adminUrl });
  // Its queries fail on their own if it drops; an 'error' event without a listener would end the bench.
  client.on('error', () => {});
  const where = new URL(adminUrl);
  try {
    await client.connect();
  } catch (err) {
    throw new Error(
      `Cannot connect to the PostgreSQL server of --database (${where.host}): ${(err as Error).message}`,
    );
  }
  // A random, lower-case name needs no quoting.
  const name = `cairn_bench_${randomBytes(6).toString('hex')}`;
  try {
    await client.query(`CREATE DATABASE ${name}`);
  } catch (err) {
    await client.end();
    throw new Error(`Cannot create a database on ${where.host}: ${(err as Error).message}`);
  }
  const url = new URL(adminUrl);
  url.pathname = `/${name}`;
  // /proc shows PostgreSQL's processes only when it runs here.
  const local = ['127.0.0.1', 'localhost', '[::1]', ''].includes(where.hostname);
  return {
    name,
    url: url.toString(),
    async backendsCpu() {
      const out = new Map<number, number>();
      if (!local) return out;
      const { rows } = await client.query<{ pid: number }>(
        'select pid from pg_stat_activity where datname = $1',
        [name],
      );
      for (const { pid } of rows) {
        try {
          out.set(pid, await cpuMs(pid));
        } catch {} // ended meanwhile
      }
      return out;
    },
    async close(keep) {
      try {
        if (!keep) await client.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      } finally {
        await client.end();
      }
    },
  };
}

/** CPU the backends used between two {@link BenchDatabase.backendsCpu} readings (those that ended meanwhile are missed). */
function cpuBetween(before: Map<number, number>, after: Map<number, number>): number {
  let total = 0;
  for (const [pid, ms] of after) total += ms - (before.get(pid) ?? 0);
  return total;
}

// ---- the run ------------------------------------------------------------------------------

async function main(): Promise<void> {
  // First, so that a database that cannot be used stops the bench before anything starts.
  const db =
    DATABASE === undefined
      ? undefined
      : await createBenchDatabase(DATABASE).catch((err: unknown) => {
          process.stderr.write(`bench:fleet: ${(err as Error).message}\n`);
          process.exit(1);
        });
  databaseUrl = db?.url;
  const dataDir = await mkdtemp(join(tmpdir(), 'cairn-fleet-'));
  const replicas: Replica[] = [];
  for (let index = 0; index < REPLICAS; index++) {
    const port = await freePort();
    const url = `http://127.0.0.1:${port}`;
    const metricsPort = METRICS === undefined ? undefined : await freePort();
    replicas.push(
      REPLICAS === 1
        ? { index, port, metricsPort, url, dataDir, logFile: join(dataDir, 'server.log') }
        : {
            index,
            port,
            metricsPort,
            url,
            dataDir: join(dataDir, `replica-${index}`),
            logFile: join(dataDir, `replica-${index}.log`),
          },
    );
  }
  base = replicas[0]!.url;
  say(
    `fleet: ${AGENTS} agents in ${WORKERS} worker processes, starting within ${START_WITHIN_S} s; downloads take ${DEPLOY_MS} ms`,
  );
  say(
    `machine: ${cpus().length} x ${cpus()[0]?.model ?? '?'}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB, Node ${process.version}`,
  );
  say(
    REPLICAS === 1
      ? `server data and log: ${dataDir}`
      : `replicas' data dirs and logs: ${dataDir} (replica-N/, replica-N.log)`,
  );
  if (db) say(`database: PostgreSQL, a fresh database ${db.name} on ${new URL(db.url).host}`);
  if (REPLICAS > 1)
    say(
      `replicas: ${REPLICAS} cairn server processes sharing that database (${replicas.map((r) => r.url).join(', ')}), each with the cache's files in its own data dir (the simulated agents download nothing); agent i connects straight to replica i mod ${REPLICAS} (no load balancer); rollouts are posted through replica 0, and reach the other replicas' agents through PostgreSQL LISTEN/NOTIFY`,
    );
  pin(process.pid, AGENT_CPUS);
  say(
    !PIN
      ? 'CPUs: not pinned'
      : REPLICAS === 1
        ? `CPUs: server ${SERVER_CPUS}, agents and this process ${AGENT_CPUS}`
        : `CPUs: replicas ${REPLICA_CPUS.join(', ')}${OWN_CPUS ? '' : ' (sharing one CPU: the machine has too few for one each)'}, agents and this process ${AGENT_CPUS}${db ? '; PostgreSQL not pinned' : ''}`,
  );
  const servers: Server[] = [];
  const workers: Worker[] = [];
  try {
    // Replica 0 first: it creates the workspace and the admin token, which the others find.
    servers.push(await startServer(replicas[0]!));
    await waitHealthy(base);
    for (const r of replicas.slice(1)) servers.push(await startServer(r));
    await Promise.all(replicas.slice(1).map((r) => waitHealthy(r.url)));
    admin = (await readFile(join(replicas[0]!.dataDir, 'admin-token'), 'utf8')).trim();

    // Set-up: a cache holding one store path, and N agents with their tokens.
    await api('POST', '/caches', { name: 'main' });
    const path = await uploadPath(`fleet ${Date.now()}`);
    const setupStart = Date.now();
    const agents: Array<{ name: string; token: string; server: string }> = new Array(AGENTS);
    let created = 0;
    await Promise.all(
      Array.from({ length: 8 }, async () => {
        while (created < AGENTS) {
          const i = created++;
          const name = `host-${String(i).padStart(5, '0')}`;
          const r = await api<{ token: string }>('POST', '/agents', { name });
          agents[i] = { name, token: r.token, server: replicas[i % REPLICAS]!.url };
        }
      }),
    );
    /** The replica each agent connects to, by name. */
    const replicaOf = new Map(agents.map((a, i) => [a.name, i % REPLICAS]));
    say(`set-up: ${AGENTS} agents created in ${((Date.now() - setupStart) / 1000).toFixed(1)} s`);

    // 1. Connect.
    await sleep(500);
    const rssBeforeEach = await Promise.all(servers.map((s) => rss(s.pid)));
    const rssBefore = rssBeforeEach.reduce((a, b) => a + b, 0);
    for (let w = 0; w < WORKERS; w++) workers.push(startWorker());
    const connectStart = Date.now();
    workers.forEach((w, i) => {
      w.send({
        cmd: 'start',
        agents: agents.filter((_, j) => j % WORKERS === i),
        localAddress: `127.0.0.${i + 2}`,
        deployMs: DEPLOY_MS,
        startWithinMs: START_WITHIN_S * 1000,
        closure: [{ path: path.storePath, narSize: path.nar.length, references: [] }],
      });
    });
    const connected = await until(
      workers,
      'connect',
      (s) => sum(s, (x) => x.welcomed) === AGENTS,
      300_000,
      200,
    );
    const connectS = (Math.max(...connected.map((s) => s.lastWelcomeAt)) - connectStart) / 1000;
    const listed = await api<{ agents: Array<{ online: boolean }> }>('GET', '/agents');
    const online = listed.agents.filter((a) => a.online).length;
    if (online !== AGENTS) throw new Error(`connect: the API shows ${online} of ${AGENTS} agents online`);
    await sleep(1000);
    const rssConnectedEach = await Promise.all(servers.map((s) => rss(s.pid)));
    const rssConnected = rssConnectedEach.reduce((a, b) => a + b, 0);
    const rssPerAgent = Math.round((rssConnected - rssBefore) / AGENTS);
    say(
      `connect: ${AGENTS} online in ${connectS.toFixed(1)} s (starting within ${START_WITHIN_S} s); ${failed(connected)}; ${REPLICAS === 1 ? 'server RSS' : `replicas' RSS (together; each ${rssBeforeEach.map(mib).join(' + ')} before, ${rssConnectedEach.map(mib).join(' + ')} after)`} ${mib(rssBefore)} before, ${mib(rssConnected)} after (${(rssPerAgent / 1024).toFixed(1)} KiB per agent)`,
    );

    const metricsUrl =
      METRICS === undefined ? undefined : `http://127.0.0.1:${replicas[0]!.metricsPort}/metrics`;
    const scrapedIdle =
      metricsUrl === undefined
        ? undefined
        : await timeScrapes(metricsUrl, 'after the connect', `${replicas[0]!.url}/healthz`);

    if (STAGED) {
      serverPids = servers.map((s) => s.pid);
      const staged = await stagedRuns(workers, agents);
      say(
        JSON.stringify({
          agents: AGENTS,
          workers: WORKERS,
          ...(REPLICAS > 1 ? { replicas: REPLICAS } : {}),
          ...(db ? { database: 'postgres' } : {}),
          connect_s: round(connectS, 2),
          deploy_ms: DEPLOY_MS,
          start_within_s: START_WITHIN_S,
          ...staged,
          bench_s: Math.round((Date.now() - BENCH_START) / 1000),
        }),
      );
      return;
    }

    // 2. Fan-out: one rollout to every agent.
    const before = await allStats(workers, true);
    const serverCpuBefore = await Promise.all(servers.map((s) => cpuMs(s.pid)));
    const postgresCpuBefore = await db?.backendsCpu();
    const deployJson = { agents: Object.fromEntries(agents.map((a) => [a.name, path.storePath])) };
    const fanoutStart = Date.now();
    // How responsive the server stays meanwhile (the longest /healthz silence on a kept-alive connection).
    const fanoutProber = startProbers(replicas, true, fanoutStart);
    const rollout = await api<{ id: number; deployments: Deployment[] }>('POST', '/rollouts', deployJson);
    const createdMs = Date.now() - fanoutStart;
    // Complete is when the server says so: the rollout's event stream (what `cairn deploy
    // activate` follows) ends once every deployment is final.
    const complete = (async () => {
      const res = await fetch(`${base}/api/v1/workspaces/${WS}/rollouts/${rollout.id}/events`, {
        headers: { Authorization: `Bearer ${admin}` },
      });
      if (!res.ok || !res.body) throw new Error(`rollout events: ${res.status}`);
      const decoder = new TextDecoder();
      let tail = '';
      for await (const chunk of res.body) {
        tail = (tail + decoder.decode(chunk as Uint8Array, { stream: true })).slice(-64);
        if (tail.includes('event: end')) return Date.now() - fanoutStart;
      }
      throw new Error('rollout events: the stream ended without `end`');
    })().catch(async (err: unknown) => {
      // A stream cut short is most often the server dying: say so rather than "terminated".
      await sleep(500);
      checkServer();
      throw err;
    });
    // Awaited below; until then a rejection must not end the process before the clean-up.
    complete.catch(() => {});
    const received = await until(
      workers,
      'fan-out',
      (s) => sum(s, (x) => x.received.length) >= AGENTS,
      120_000,
      50,
    );
    const fanout = spread(
      received.flatMap((s) => s.received),
      fanoutStart,
    );
    // The same, for the agents of each replica (replica 0's were told by the replica posted to).
    const replicaOfDeployment = new Map(
      rollout.deployments.map((d) => [String(d.id), replicaOf.get(d.agent)]),
    );
    const fanoutEach = replicas.map((r) =>
      spread(
        received
          .flatMap((s) => s.receivedById)
          .filter(([id]) => replicaOfDeployment.get(id) === r.index)
          .map(([, at]) => at),
        fanoutStart,
      ),
    );
    const rolloutCompleteMs = await Promise.race([
      complete,
      sleep(300_000).then(async () => {
        const s = await allStats(workers);
        throw new Error(
          `fan-out: the rollout did not complete in 300 s: ${await rolloutStates(rollout.id)}; agents: ${sum(s, (x) => x.completed)} finished, ${sum(s, (x) => x.confirmMs.length)} confirmed, ${sum(s, (x) => x.unconfirmed)} not confirmed in time, ${sum(s, (x) => x.acknowledged)} results acknowledged, ${sum(s, (x) => x.welcomed)} welcomed now; ${failed(s)}`,
        );
      }),
    ]);
    const final = await api<{ deployments: Deployment[] }>('GET', `/rollouts/${rollout.id}`);
    const notSucceeded = final.deployments.filter((d) => d.state !== 'succeeded');
    if (notSucceeded.length > 0) {
      const s = await allStats(workers);
      throw new Error(
        `fan-out: ${notSucceeded.length} deployments did not succeed: ${await rolloutStates(rollout.id)}; agents: ${sum(s, (x) => x.unconfirmed)} not confirmed in time; ${failed(s)}`,
      );
    }
    // Every agent's own account: its confirmation and its result's acknowledgement.
    const finished = await until(
      workers,
      'results acknowledged',
      (s) => sum(s, (x) => x.acknowledged) >= AGENTS,
      60_000,
      100,
    );
    const confirm = spread(
      finished.flatMap((s) => s.confirmMs),
      0,
    );
    const fanoutWallMs = Date.now() - fanoutStart;
    const fanoutHealth = await fanoutProber.stop();
    const serverCpuEach = await Promise.all(
      servers.map(async (s, i) => (await cpuMs(s.pid)) - serverCpuBefore[i]!),
    );
    const serverCpu = serverCpuEach.reduce((a, b) => a + b, 0);
    const postgresCpu = db ? cpuBetween(postgresCpuBefore!, await db.backendsCpu()) : 0;
    const agentsCpu = sum(finished, (x) => x.cpuMs) - sum(before, (x) => x.cpuMs);
    const confirmDrop = spread(
      finished.flatMap((s) => s.confirmDropMs),
      0,
    );
    const byReplica =
      REPLICAS === 1
        ? ''
        : `; received by the agents of ${fanoutEach.map((f, i) => `replica ${i}${i === 0 ? ' (posted to)' : ''} p50 ${f.p50} ms, p99 ${f.p99} ms, max ${f.max} ms`).join('; ')}`;
    say(
      `fan-out: rollout of ${AGENTS} created in ${createdMs} ms; received p50 ${fanout.p50} ms, p99 ${fanout.p99} ms, max ${fanout.max} ms; confirmation (activated to \`confirmed\` over a new connection) p50 ${confirm.p50} ms, p99 ${confirm.p99} ms, max ${confirm.max} ms, of which until the old socket was dropped p50 ${confirmDrop.p50} ms, p99 ${confirmDrop.p99} ms; complete (every deployment succeeded, as the server records it) in ${rolloutCompleteMs} ms (each agent's download takes ${DEPLOY_MS} ms); ${failed(finished)}${byReplica}`,
    );
    const cpuWho =
      REPLICAS === 1
        ? `server ${(serverCpu / 1000).toFixed(1)} s`
        : `replicas ${(serverCpu / 1000).toFixed(1)} s (${serverCpuEach.map((c) => `${(c / 1000).toFixed(1)}`).join(' + ')})`;
    say(
      `fan-out CPU: ${cpuWho}, ${db ? `PostgreSQL ${(postgresCpu / 1000).toFixed(1)} s, ` : ''}agents ${(agentsCpu / 1000).toFixed(1)} s, in ${(fanoutWallMs / 1000).toFixed(1)} s; longest /healthz silence ${fanoutHealth.longestSilence} ms${REPLICAS === 1 ? '' : ` (each ${fanoutHealth.perReplica.join(', ')} ms)`}; agents' event loop delay p99 ${Math.max(...finished.map((s) => s.loopDelayP99Ms))} ms, max ${Math.max(...finished.map((s) => s.loopDelayMaxMs))} ms`,
    );

    if (metricsUrl !== undefined && scrapedIdle !== undefined) {
      const scrapedAfter = await timeScrapes(
        metricsUrl,
        `after the fan-out (${AGENTS} deployments)`,
        `${replicas[0]!.url}/healthz`,
      );
      say(
        JSON.stringify({
          agents: AGENTS,
          workers: WORKERS,
          ...(REPLICAS > 1 ? { replicas: REPLICAS } : {}),
          ...(db ? { database: 'postgres' } : {}),
          metrics: METRICS,
          connect_s: round(connectS, 2),
          fanout_p99_ms: fanout.p99,
          rollout_complete_ms: rolloutCompleteMs,
          scrapes: SCRAPES,
          scrape_gap_ms: SCRAPE_GAP_MS,
          metrics_idle_p50_ms: scrapedIdle.p50,
          metrics_idle_p99_ms: scrapedIdle.p99,
          metrics_idle_max_ms: scrapedIdle.max,
          metrics_p50_ms: scrapedAfter.p50,
          metrics_p99_ms: scrapedAfter.p99,
          metrics_max_ms: scrapedAfter.max,
          metrics_healthz_max_ms: scrapedAfter.healthMax,
          metrics_own_max_ms: scrapedAfter.ownMax,
          metrics_bytes: scrapedAfter.bytes,
          metrics_series: scrapedAfter.series,
          loadavg: loadavg().map((l) => round(l, 2)),
          bench_s: Math.round((Date.now() - BENCH_START) / 1000),
        }),
      );
      return;
    }

    // 3. Reconnect storm: stop the server (every replica at once), start it again on the same data.
    await allStats(workers, true);
    const stormStart = Date.now();
    const stopped = await Promise.all(
      servers.map(async (s) => ({ exit: await stopServer(s), ms: Date.now() - stormStart })),
    );
    const stoppedMs = Date.now() - stormStart;
    const stopExit = stopped.every((s) => s.exit === 'exit 0') ? 'exit 0' : 'not clean';
    // A server that crashed while stopping also "stops": say so, with the end of its log.
    const stopCrash = stopped
      .map(({ exit }, i) =>
        exit === 'exit 0'
          ? ''
          : ` (${REPLICAS === 1 ? 'it' : `replica ${i}`} did not stop cleanly: ${exit}; the end of its log:\n${readFileSync(replicas[i]!.logFile, 'utf8').trimEnd().split('\n').slice(-12).join('\n')}\n)`,
      )
      .join('');
    for (const r of replicas) servers[r.index] = await startServer(r);
    const peakRss = servers.map(() => 0);
    const peakCpu = servers.map(() => 0);
    let sampling = true;
    const samplers = servers.map(async (server, i) => {
      let lastCpu = 0;
      let lastCpuAt = Date.now();
      while (sampling) {
        try {
          peakRss[i] = Math.max(peakRss[i]!, await rss(server.pid));
          const c = await cpuMs(server.pid);
          const now = Date.now();
          if (lastCpu > 0) peakCpu[i] = Math.max(peakCpu[i]!, ((c - lastCpu) / (now - lastCpuAt)) * 100);
          lastCpu = c;
          lastCpuAt = now;
        } catch {}
        await sleep(500);
      }
    });
    // Up when /healthz answers on the probe's kept-alive connection, which the probe then keeps.
    const upEach = await Promise.all(
      replicas.map(async (r) => {
        for (;;) {
          const ok = await probe(`${r.url}/healthz`, true).then(
            (x) => x.status === 200,
            () => false,
          );
          if (ok) return Date.now() - stormStart;
          checkServer();
          await sleep(50);
        }
      }),
    );
    const upMs = Math.max(...upEach);
    // /healthz from now on, as a load balancer would check it, ten times a second: on one kept-
    // alive connection (the acceptance figure), and on a new connection each time (new
    // connections first wait in the kernel's accept queue behind the agents').
    const kept = startProbers(replicas, true, stormStart);
    const fresh = startProbers(replicas, false, stormStart);
    const back = await until(
      workers,
      'reconnect storm',
      (s) => sum(s, (x) => x.welcomed) === AGENTS,
      300_000,
      200,
    );
    const reconnectS = (Math.max(...back.map((s) => s.lastWelcomeAt)) - stormStart) / 1000;
    await sleep(2000);
    sampling = false;
    const [keptFigures, freshFigures] = await Promise.all([kept.stop(), fresh.stop()]);
    await Promise.all(samplers);
    const after = await api<{ deployments: Deployment[] }>('GET', `/rollouts/${rollout.id}`);
    const newest = await api<{ deployments: Array<Deployment & { rolloutId: number }> }>(
      'GET',
      '/deployments?limit=1',
    );
    const stillSucceeded = after.deployments.filter((d) => d.state === 'succeeded').length;
    const duplicates = sum(back, (x) => x.duplicates) + sum(back, (x) => x.received.length);
    const lost = AGENTS - stillSucceeded;
    // Nothing but this rollout may exist: a deployment created by the restart would be a duplicate.
    const extra =
      newest.deployments.filter((d) => d.rolloutId !== rollout.id).length +
      (after.deployments.length - AGENTS);
    const peakRssAll = peakRss.reduce((a, b) => a + b, 0);
    const peakCpuMax = Math.max(...peakCpu);
    say(
      REPLICAS === 1
        ? `reconnect storm: ${stoppedMs} ms from SIGTERM to exit${stopCrash}, outage (SIGTERM to the new server's first /healthz 200) ${upMs} ms; all ${AGENTS} back in ${reconnectS.toFixed(1)} s; longest /healthz silence once up ${keptFigures.longestSilence} ms on a kept-alive connection (${keptFigures.summary}), ${freshFigures.longestSilence} ms on new connections (${freshFigures.summary}); peak CPU ${peakCpuMax.toFixed(0)}%, peak RSS ${mib(peakRssAll)}; ${failed(back)}; deployments lost ${lost}, sent again ${duplicates}, extra ${extra}`
        : `reconnect storm (all ${REPLICAS} replicas stopped with SIGTERM at once and started again): ${stoppedMs} ms from SIGTERM until all exited (each ${stopped.map((s) => s.ms).join(', ')} ms)${stopCrash}, outage (SIGTERM to the last new replica's first /healthz 200) ${upMs} ms (each ${upEach.join(', ')} ms); all ${AGENTS} back in ${reconnectS.toFixed(1)} s; longest /healthz silence once up ${keptFigures.longestSilence} ms on kept-alive connections (${keptFigures.summary}), ${freshFigures.longestSilence} ms on new connections (${freshFigures.summary}); peak CPU ${peakCpu.map((c) => `${c.toFixed(0)}%`).join(', ')}, peak RSS ${peakRss.map(mib).join(', ')}; ${failed(back)}; deployments lost ${lost}, sent again ${duplicates}, extra ${extra}`,
    );
    if (lost !== 0 || duplicates !== 0 || extra !== 0)
      throw new Error('reconnect storm: deployment state was lost or duplicated');

    // 4. The peer: the same fan-out from a minimal ws server, after Cairn is stopped.
    for (const w of workers) w.send({ cmd: 'stop' });
    await Promise.all(servers.map((s) => stopServer(s)));
    const peer = fork(PEER, [], {
      execArgv: ['--import', 'tsx'],
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    pin(peer.pid!, SERVER_CPUS);
    const peerMessages: Array<(m: { type: string; port?: number; count?: number; t0?: number }) => void> = [];
    peer.on('message', (m) => peerMessages.shift()?.(m as never));
    const peerNext = () =>
      new Promise<{ type: string; port?: number; count?: number; t0?: number }>((r) => peerMessages.push(r));
    const { port: peerPort } = await peerNext();
    await allStats(workers, true);
    workers.forEach((w, i) => {
      w.send({
        cmd: 'peer',
        url: `ws://127.0.0.1:${peerPort}`,
        count: Math.floor(AGENTS / WORKERS) + (i < AGENTS % WORKERS ? 1 : 0),
      });
    });
    await until(workers, 'peer connect', (s) => sum(s, (x) => x.peerOpen) === AGENTS, 120_000, 200);
    // The message Cairn sent each agent, in size and shape.
    const message = JSON.stringify({
      type: 'desired',
      desired: {
        id: String(rollout.deployments[0]!.id),
        storePath: path.storePath,
        rollbackScript: null,
        exit4: 'fail',
        healthChecks: [],
        confirmTimeoutSeconds: 60,
        rollback: false,
      },
    });
    await sleep(500);
    const sent = peerNext();
    peer.send({ cmd: 'broadcast', message });
    const { t0 } = await sent;
    const peerStats = await until(
      workers,
      'peer broadcast',
      (s) => sum(s, (x) => x.peerReceived.length) >= AGENTS,
      60_000,
      50,
    );
    const ws = spread(
      peerStats.flatMap((s) => s.peerReceived),
      t0!,
    );
    say(
      `peer (minimal ws broadcast of one message to ${AGENTS} sockets): p50 ${ws.p50} ms, p99 ${ws.p99} ms, max ${ws.max} ms`,
    );
    const ratio = fanout.max / Math.max(1, ws.max);
    say(`fan-out vs peer: ${ratio.toFixed(1)}x (all received: ${fanout.max} ms vs ${ws.max} ms)`);
    for (const w of workers) w.send({ cmd: 'peer-stop' });
    peer.kill();

    const figures = {
      agents: AGENTS,
      workers: WORKERS,
      connect_s: round(connectS, 2),
      rss_before_bytes: rssBefore,
      rss_connected_bytes: rssConnected,
      rss_per_agent_bytes: rssPerAgent,
      rollout_create_ms: createdMs,
      fanout_p50_ms: fanout.p50,
      fanout_p99_ms: fanout.p99,
      fanout_max_ms: fanout.max,
      rollout_complete_ms: rolloutCompleteMs,
      confirm_p50_ms: confirm.p50,
      confirm_p99_ms: confirm.p99,
      confirm_max_ms: confirm.max,
      confirm_drop_p99_ms: confirmDrop.p99,
      fanout_server_cpu_ms: Math.round(serverCpu),
      fanout_agents_cpu_ms: Math.round(agentsCpu),
      fanout_healthz_max_silence_ms: fanoutHealth.longestSilence,
      deploy_ms: DEPLOY_MS,
      start_within_s: START_WITHIN_S,
      ws_broadcast_ms: ws.max,
      ws_broadcast_p99_ms: ws.p99,
      fanout_vs_ws: round(ratio, 2),
      reconnect_s: round(reconnectS, 2),
      restart_stop_ms: stoppedMs,
      restart_stop_clean: stopExit === 'exit 0',
      restart_outage_ms: upMs,
      reconnect_healthz_max_silence_ms: keptFigures.longestSilence,
      reconnect_healthz_new_connection_max_silence_ms: freshFigures.longestSilence,
      reconnect_peak_cpu_percent: Math.round(peakCpuMax),
      reconnect_peak_rss_bytes: peakRssAll,
      deployments_lost: lost,
      deployments_duplicated: duplicates + extra,
      ...(db ? { database: 'postgres', fanout_postgres_cpu_ms: Math.round(postgresCpu) } : {}),
      // Several replicas: the figures above are totals over them (RSS, CPU time) or the worst of
      // them (silences, outage, peak CPU); these are each one's, in replica order.
      ...(REPLICAS === 1
        ? {}
        : {
            replicas: REPLICAS,
            replica_cpus: REPLICA_CPUS,
            replica_agents: replicas.map((r) => agents.filter((_, i) => i % REPLICAS === r.index).length),
            replica_rss_before_bytes: rssBeforeEach,
            replica_rss_connected_bytes: rssConnectedEach,
            replica_fanout_p50_ms: fanoutEach.map((f) => f.p50),
            replica_fanout_p99_ms: fanoutEach.map((f) => f.p99),
            replica_fanout_max_ms: fanoutEach.map((f) => f.max),
            replica_fanout_cpu_ms: serverCpuEach.map(Math.round),
            replica_fanout_healthz_max_silence_ms: fanoutHealth.perReplica,
            replica_restart_stop_ms: stopped.map((x) => x.ms),
            replica_restart_outage_ms: upEach,
            replica_reconnect_healthz_max_silence_ms: keptFigures.perReplica,
            replica_reconnect_peak_cpu_percent: peakCpu.map(Math.round),
            replica_reconnect_peak_rss_bytes: peakRss,
          }),
      bench_s: Math.round((Date.now() - BENCH_START) / 1000),
    };
    say(JSON.stringify(figures));
  } finally {
    for (const w of workers) w.child.kill();
    await Promise.all(servers.map((s) => stopServer(s).catch(() => {})));
    if (!values['keep-data']) await rm(dataDir, { recursive: true, force: true });
    await db?.close(values['keep-data']).catch((err: unknown) => {
      process.stderr.write(
        `bench:fleet: could not drop the database ${db.name}: ${(err as Error).message}\n`,
      );
    });
    if (db && values['keep-data']) say(`kept the database ${db.name}`);
  }
}

interface StagedInfo {
  state: string;
  reason: string | null;
  batch: number;
  batches: Array<{ index: number; label: string; agents: number; openedAt: string | null }>;
}

/**
 * Follows a rollout's event stream (what `cairn deploy activate` follows) until `end`; notes when
 * each batch opened, as the server records it (`openedAt` of the current batch in each `rollout`
 * event). Resolves with the epoch ms at which `end` arrived.
 */
async function followRollout(id: number, opened: Map<number, number>): Promise<number> {
  const res = await fetch(`${base}/api/v1/workspaces/${WS}/rollouts/${id}/events`, {
    headers: { Authorization: `Bearer ${admin}` },
  });
  if (!res.ok || !res.body) throw new Error(`rollout events: ${res.status}`);
  const decoder = new TextDecoder();
  let buf = '';
  for await (const chunk of res.body) {
    buf += decoder.decode(chunk as Uint8Array, { stream: true });
    const blocks = buf.split('\n\n');
    buf = blocks.pop() ?? '';
    for (const block of blocks) {
      const event = /^event: (.*)$/m.exec(block)?.[1];
      if (event === 'end') return Date.now();
      if (event !== 'rollout') continue;
      const data = block
        .split('\n')
        .filter((l) => l.startsWith('data: '))
        .map((l) => l.slice(6))
        .join('\n');
      const st = JSON.parse(data) as StagedInfo;
      const at = st.batches[st.batch]?.openedAt;
      if (at && !opened.has(st.batch)) opened.set(st.batch, Date.parse(at));
    }
  }
  throw new Error('rollout events: the stream ended without `end`');
}

/**
 * Staged rollouts, one after the other, each of a new store path to every agent, with the
 * batches of --staged, bake 0 and a threshold that cannot trip (all agents succeed; `max: 100%`
 * would need every decided agent to fail). For each transition from batch k to k+1:
 *   - `delay`: from the moment the last agent of batch k had its result (the simulated agent,
 *     as it hands the result to the session to send) to the moment the first agent of batch
 *     k+1 received its `desired` message: what the fleet sees of the engine;
 *   - `from_finished`: the same, from the last `finishedAt` of batch k as the server recorded it;
 *   - `engine`: from that `finishedAt` to the server's `openedAt` of batch k+1 (when seen in the
 *     event stream: two batches opened between two events leave it out).
 */
async function stagedRuns(
  workers: Worker[],
  agents: ReadonlyArray<{ name: string }>,
): Promise<Record<string, unknown>> {
  const policy = { batches: STAGED, bake: '0', failureThreshold: { max: '100%' } };
  say(
    `staged: ${ROLLOUTS} rollouts to all ${AGENTS} agents, one after the other; "rollout": ${JSON.stringify(policy)}`,
  );
  const delays: number[] = [];
  const fromFinished: number[] = [];
  const engine: number[] = [];
  const totals: number[] = [];
  const serverCpu: number[] = [];
  for (let n = 1; n <= ROLLOUTS; n++) {
    const path = await uploadPath(`fleet staged ${n} ${Date.now()}`);
    await allStats(workers, true);
    const cpuBefore = await serversCpuMs();
    const t0 = Date.now();
    const deployJson = {
      agents: Object.fromEntries(agents.map((a) => [a.name, path.storePath])),
      rollout: policy,
    };
    const rollout = await api<{ id: number }>('POST', '/rollouts', deployJson);
    const opened = new Map<number, number>();
    const following = followRollout(rollout.id, opened);
    following.catch(() => {});
    const endAt = await Promise.race([
      following,
      sleep(600_000).then(async () => {
        throw new Error(`staged rollout ${n}: not over in 600 s: ${await rolloutStates(rollout.id)}`);
      }),
    ]);
    const totalMs = endAt - t0;
    totals.push(totalMs);
    serverCpu.push((await serversCpuMs()) - cpuBefore);
    const final = await api<{
      deployments: Array<Deployment & { batch: number | null; finishedAt: string | null }>;
      staged: StagedInfo;
    }>('GET', `/rollouts/${rollout.id}`);
    if (final.staged.state !== 'succeeded')
      throw new Error(
        `staged rollout ${n}: ${final.staged.state} (${final.staged.reason}): ${await rolloutStates(rollout.id)}`,
      );
    const s = await until(
      workers,
      'staged results',
      (x) => sum(x, (w) => w.resultById.length) >= AGENTS,
      60_000,
      100,
    );
    const received = new Map(s.flatMap((w) => w.receivedById));
    const result = new Map(s.flatMap((w) => w.resultById));
    const count = final.staged.batches.length;
    const lastResult = new Array<number>(count).fill(0);
    const lastFinished = new Array<number>(count).fill(0);
    const firstReceived = new Array<number>(count).fill(Number.POSITIVE_INFINITY);
    for (const d of final.deployments) {
      const b = d.batch ?? 0;
      const id = String(d.id);
      const got = received.get(id);
      const res = result.get(id);
      if (got === undefined || res === undefined)
        throw new Error(`staged rollout ${n}: agent ${d.agent} has no record of deployment ${id}`);
      firstReceived[b] = Math.min(firstReceived[b]!, got);
      lastResult[b] = Math.max(lastResult[b]!, res);
      lastFinished[b] = Math.max(lastFinished[b]!, Date.parse(d.finishedAt!));
    }
    const parts: string[] = [];
    for (let b = 0; b + 1 < count; b++) {
      const delay = firstReceived[b + 1]! - lastResult[b]!;
      const fin = firstReceived[b + 1]! - lastFinished[b]!;
      const open = opened.get(b + 1);
      delays.push(delay);
      fromFinished.push(fin);
      if (open !== undefined) engine.push(open - lastFinished[b]!);
      const label = (i: number) => final.staged.batches[i]!.label;
      parts.push(
        `${label(b)}→${label(b + 1)} ${delay} ms (from the server's finishedAt ${fin} ms, of it until the batch opened ${open === undefined ? '?' : open - lastFinished[b]!} ms)`,
      );
    }
    const sizes = final.staged.batches.map((b) => b.agents).join('/');
    say(
      `staged rollout ${n} (batches of ${sizes} agents): ${(totalMs / 1000).toFixed(1)} s from the POST to the end of its event stream, server CPU ${(serverCpu.at(-1)! / 1000).toFixed(1)} s; last result of a batch to the next batch's first \`desired\`: ${parts.join('; ')}`,
    );
  }
  const sorted = (xs: number[]) => [...xs].sort((a, b) => a - b);
  const d = sorted(delays);
  const f = sorted(fromFinished);
  const e = sorted(engine);
  say(
    `staged: batch transitions over ${d.length} samples (${ROLLOUTS} rollouts x ${d.length / ROLLOUTS}): last result to next batch's first \`desired\` p50 ${percentile(d, 50)} ms, p99 ${percentile(d, 99)} ms, max ${d.at(-1)} ms; from the server's finishedAt p50 ${percentile(f, 50)} ms, p99 ${percentile(f, 99)} ms; finishedAt to batch opened (${e.length} seen) p50 ${percentile(e, 50)} ms, p99 ${percentile(e, 99)} ms; rollout total p50 ${(percentile(sorted(totals), 50) / 1000).toFixed(1)} s, max ${(Math.max(...totals) / 1000).toFixed(1)} s`,
  );
  return {
    staged_batches: STAGED,
    staged_rollouts: ROLLOUTS,
    staged_transitions: d.length,
    staged_delay_ms: delays,
    staged_delay_p50_ms: percentile(d, 50),
    staged_delay_p99_ms: percentile(d, 99),
    staged_delay_max_ms: d.at(-1),
    staged_from_finished_p99_ms: percentile(f, 99),
    staged_engine_p99_ms: percentile(e, 99),
    staged_rollout_ms: totals,
    staged_server_cpu_ms: serverCpu.map(Math.round),
  };
}

/** The failed connection attempts since the last reset, and why. */
function failed(s: WorkerStats[]): string {
  const why = new Map<string, number>();
  for (const w of s) for (const [k, n] of Object.entries(w.failureReasons)) why.set(k, (why.get(k) ?? 0) + n);
  const list = [...why].sort((a, b) => b[1] - a[1]).map(([k, n]) => `${n}x ${k}`);
  return `${sum(s, (x) => x.failures)} failed attempts${list.length ? ` (${list.join('; ')})` : ''}`;
}

function mib(bytes: number): string {
  return `${(bytes / 2 ** 20).toFixed(0)} MiB`;
}

function round(x: number, digits: number): number {
  return Number(x.toFixed(digits));
}

await main();
probeAgent.destroy();
// Kept-alive HTTP connections and exiting children must not keep the bench waiting.
process.exit(0);
