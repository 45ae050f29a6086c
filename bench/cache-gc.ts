/**
 * Benchmarks the cache's garbage collector on a cache of many paths while clients keep reading.
 *
 * Starts `cairn server` from this checkout (src/main.ts, a child process) on a fresh data dir
 * (SQLite, or PostgreSQL with BENCH_DATABASE_URL), creates a private cache, and uploads
 * BENCH_GC_PATHS synthetic store paths (default 100,000) through the cache's HTTP API as a
 * client would: a NAR and a narinfo per path, in closures of 10 where each path refers to the
 * one before it. One closure in BENCH_GC_PINNED_EVERY (default 10) is pinned; the cache's
 * retention is then set to 1 s, so that, once it has passed, every other path is garbage.
 *
 * Then, with 8 readers fetching narinfos (and every tenth request a NAR) of pinned paths on
 * keep-alive connections with the pull token, as Nix does from a netrc file, it measures:
 *   1. reads alone for 5 s (the baseline);
 *   2. a dry run (`GET .../gc`) and then the collection (`POST .../gc`, what `cairn cache gc` and
 *      the schedule run), with the reads going on throughout;
 * and checks afterwards that every pinned path is still served and a sample of the others is not.
 * Prints a table and, as the last line, a JSON object with every figure. Exits 1 when the
 * collection takes a minute or more or a read of a kept path failed (issue #19's targets).
 *
 * Usage: node --import tsx bench/cache-gc.ts
 * Environment: BENCH_GC_PATHS (default 100000), BENCH_GC_PINNED_EVERY (default 10),
 * BENCH_DATABASE_URL (postgres://...; SQLite in the data dir if unset).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { Agent, request as httpRequest } from 'node:http';
import { createServer } from 'node:net';
import { cpus, loadavg, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { narinfoText, type SyntheticPath, syntheticPath } from '../test/helpers/binary-cache.ts';
import { RUN_TAG, run } from '../test/helpers/nix.ts';

const PATHS = Number(process.env.BENCH_GC_PATHS ?? 100_000);
const PINNED_EVERY = Number(process.env.BENCH_GC_PINNED_EVERY ?? 10);
const CLOSURE = 10;
const UPLOAD_CONCURRENCY = 32;
const READERS = 8;
const TARGET_GC_MS = 60_000;
const HOST = '127.0.0.1';
const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');

async function freePort(): Promise<number> {
  return await new Promise((resolve, reject) => {
    const s = createServer();
    s.listen(0, HOST, () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
    s.on('error', reject);
  });
}

function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] as number;
}

const round1 = (x: number) => Math.round(x * 10) / 10;

/** One request on a keep-alive agent: the status and the body. */
function request(
  url: string,
  options: { method?: string; headers?: Record<string, string>; body?: Buffer | string; agent: Agent },
): Promise<{ status: number; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(
      url,
      { method: options.method ?? 'GET', headers: options.headers, agent: options.agent },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (d: Buffer) => chunks.push(d));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks) }));
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(options.body);
  });
}

/** Reads kept paths until stopped: latencies (ms) and failures. */
function startReaders(base: string, auth: string, kept: readonly SyntheticPath[], dispatcher: Agent) {
  const latencies: number[] = [];
  const failures: string[] = [];
  /** Reads slower than a second: when (ms since the readers started), how long, what. */
  const slow: Array<{ atMs: number; ms: number; what: string }> = [];
  let stop = false;
  let n = 0;
  const reader = async () => {
    while (!stop) {
      const p = kept[Math.floor(Math.random() * kept.length)] as SyntheticPath;
      const nar = ++n % 10 === 0;
      const url = nar ? `${base}/nar/${p.narFile}` : `${base}/${p.hashPart}.narinfo`;
      const t0 = performance.now();
      try {
        const res = await request(url, { headers: { authorization: auth }, agent: dispatcher });
        const ms = performance.now() - t0;
        latencies.push(ms);
        if (ms > 1000)
          slow.push({ atMs: Math.round(t0 - started), ms: Math.round(ms), what: nar ? 'nar' : 'narinfo' });
        if (res.status !== 200) failures.push(`${url}: ${res.status}`);
        else if (nar && !res.body.equals(p.nar)) failures.push(`${url}: other bytes`);
      } catch (err) {
        failures.push(`${url}: ${(err as Error).message}`);
      }
    }
  };
  const started = performance.now();
  const running = Array.from({ length: READERS }, reader);
  return {
    async stop() {
      stop = true;
      await Promise.all(running);
      const seconds = (performance.now() - started) / 1000;
      const sorted = latencies.sort((a, b) => a - b);
      return {
        requests: sorted.length,
        perSecond: Math.round(sorted.length / seconds),
        p50Ms: round1(percentile(sorted, 50)),
        p99Ms: round1(percentile(sorted, 99)),
        maxMs: round1(sorted.at(-1) ?? 0),
        failures: failures.length,
        firstFailures: failures.slice(0, 5),
        slowReads: slow.slice(0, 20),
        startedMs: Math.round(started),
      };
    },
  };
}

const dir = await mkdtemp(join(tmpdir(), 'cairn-bench-gc-'));
let server: ChildProcess | undefined;
try {
  const port = await freePort();
  const dataDir = join(dir, 'data');
  const args = [
    '--import',
    'tsx',
    join(ROOT, 'src/main.ts'),
    'server',
    '--listen',
    `${HOST}:${port}`,
    '--data-dir',
    dataDir,
    '--log-level',
    'warn',
    '--gc-interval',
    '0',
    ...(process.env.BENCH_DATABASE_URL ? ['--database', process.env.BENCH_DATABASE_URL] : []),
  ];
  const child = spawn(process.execPath, args, { cwd: ROOT, stdio: ['ignore', 'ignore', 'pipe'] });
  child.stderr?.on('data', (d: Buffer) => {
    if (process.env.BENCH_GC_TRACE) process.stderr.write(d);
  });
  server = child;
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
  const url = `http://${HOST}:${port}`;
  for (let i = 0; ; i++) {
    const ok = await fetch(`${url}/healthz`).then(
      (r) => r.ok,
      () => false,
    );
    if (ok) break;
    if (i > 300 || child.exitCode !== null) throw new Error(`the server did not start:\n${stderr}`);
    await sleep(100);
  }
  const admin = (await readFile(join(dataDir, 'admin-token'), 'utf8')).trim();
  const api = async (method: string, path: string, body?: unknown) => {
    const res = await fetch(`${url}/api/v1/workspaces/default/${path}`, {
      method,
      headers: { Authorization: `Bearer ${admin}`, 'Content-Type': 'application/json' },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
    const text = await res.text();
    if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${text}`);
    return text ? (JSON.parse(text) as Record<string, unknown>) : {};
  };
  await api('POST', 'caches', { name: 'gc', public: false });
  const push = String((await api('POST', 'tokens', { name: 'push', scopes: ['cache:gc:push'] })).token);
  const pull = String((await api('POST', 'tokens', { name: 'pull', scopes: ['cache:gc:pull'] })).token);
  const cacheUrl = `${url}/cache/gc`;
  const pullAuth = `Basic ${Buffer.from(`cairn:${pull}`).toString('base64')}`;
  const dispatcher = new Agent({ keepAlive: true, maxSockets: 64 });

  // Closures of 10: path k of a closure refers to path k-1 (uploaded first, as Nix does).
  console.log(`uploading ${PATHS} paths in closures of ${CLOSURE} (run ${RUN_TAG})`);
  const closures: SyntheticPath[][] = [];
  for (let c = 0; c * CLOSURE < PATHS; c++) {
    const list: SyntheticPath[] = [];
    for (let k = 0; k < CLOSURE && c * CLOSURE + k < PATHS; k++) {
      const prev = list[k - 1];
      list.push(
        syntheticPath(
          `gc${c}-${k}-${RUN_TAG}`,
          `closure ${c} path ${k} ${RUN_TAG}`,
          prev ? [prev.storePath.slice(11)] : [],
        ),
      );
    }
    closures.push(list);
  }
  const put = async (target: string, body: Buffer | string) => {
    const res = await request(target, {
      method: 'PUT',
      headers: { authorization: `Bearer ${push}` },
      body,
      agent: dispatcher,
    });
    if (res.status >= 300) throw new Error(`PUT ${target}: ${res.status} ${res.body.toString()}`);
  };
  const tUpload = performance.now();
  let next = 0;
  await Promise.all(
    Array.from({ length: UPLOAD_CONCURRENCY }, async () => {
      for (;;) {
        const c = next++;
        const list = closures[c];
        if (!list) return;
        for (const p of list) {
          await put(`${cacheUrl}/nar/${p.narFile}`, p.nar);
          await put(`${cacheUrl}/${p.hashPart}.narinfo`, narinfoText(p.fields));
        }
      }
    }),
  );
  const uploadSeconds = (performance.now() - tUpload) / 1000;
  console.log(`uploaded in ${uploadSeconds.toFixed(1)} s (${Math.round(PATHS / uploadSeconds)} paths/s)`);

  const pinned = closures.filter((_, i) => i % PINNED_EVERY === 0);
  for (const list of pinned)
    await api('POST', 'caches/gc/pins', { storePath: (list.at(-1) as SyntheticPath).storePath });
  const kept = pinned.flat();
  const garbage = closures.filter((_, i) => i % PINNED_EVERY !== 0).flat();
  await api('PATCH', 'caches/gc', { retentionSeconds: 1 });
  await sleep(2000);

  console.log(`reading ${kept.length} pinned paths with ${READERS} clients: 5 s alone`);
  const baselineReaders = startReaders(cacheUrl, pullAuth, kept, dispatcher);
  await sleep(5000);
  const baseline = await baselineReaders.stop();

  const duringReaders = startReaders(cacheUrl, pullAuth, kept, dispatcher);
  const tDry = performance.now();
  const phases: Record<string, number> = {};
  const dry = (await api('GET', 'caches/gc/gc')) as {
    paths: unknown[];
    narFiles: unknown[];
    bytesFreed: number;
  };
  const dryMs = performance.now() - tDry;
  phases.dryRunEnded = Math.round(performance.now());
  console.log(`dry run: ${dry.paths.length} paths in ${Math.round(dryMs)} ms; collecting`);
  const tGc = performance.now();
  const gc = (await api('POST', 'caches/gc/gc')) as {
    paths: unknown[];
    narFiles: unknown[];
    bytesFreed: number;
    startedAt: string;
    finishedAt: string;
    spared: number;
  };
  const gcMs = performance.now() - tGc;
  phases.dryRunStarted = Math.round(tDry);
  phases.collectionStarted = Math.round(tGc);
  phases.collectionEnded = Math.round(performance.now());
  const during = await duringReaders.stop();

  // Every kept path still whole; a sample of the garbage gone.
  let keptMissing = 0;
  for (const p of kept) {
    const res = await request(`${cacheUrl}/${p.hashPart}.narinfo`, {
      headers: { authorization: pullAuth },
      agent: dispatcher,
    });
    if (res.status !== 200) keptMissing++;
  }
  let garbageServed = 0;
  const sample = garbage.filter((_, i) => i % 97 === 0);
  for (const p of sample) {
    const res = await request(`${cacheUrl}/${p.hashPart}.narinfo`, {
      headers: { authorization: pullAuth },
      agent: dispatcher,
    });
    if (res.status !== 404) garbageServed++;
  }

  const targets = {
    gcUnderAMinute: { maxMs: TARGET_GC_MS, ms: Math.round(gcMs), met: gcMs < TARGET_GC_MS },
    readsServed: {
      failures: during.failures + keptMissing,
      met: during.failures === 0 && keptMissing === 0 && garbageServed === 0,
    },
  };
  const rows: Array<[string, string]> = [
    ['paths in the cache', String(PATHS)],
    ['upload, paths/s (NAR + narinfo each, 32 clients)', String(Math.round(PATHS / uploadSeconds))],
    ['dry run (GET .../gc), ms', String(Math.round(dryMs))],
    [
      'collection (POST .../gc), ms',
      `${Math.round(gcMs)} (target < ${TARGET_GC_MS}) ${targets.gcUnderAMinute.met ? 'met' : 'MISSED'}`,
    ],
    ['paths removed / NAR files removed', `${gc.paths.length} / ${gc.narFiles.length}`],
    ['bytes freed', String(gc.bytesFreed)],
    [
      'reads alone: req/s, p50 / p99 / max ms',
      `${baseline.perSecond}, ${baseline.p50Ms} / ${baseline.p99Ms} / ${baseline.maxMs}`,
    ],
    [
      'reads during dry run + collection: req/s, p50 / p99 / max ms',
      `${during.perSecond}, ${during.p50Ms} / ${during.p99Ms} / ${during.maxMs}`,
    ],
    [
      'failed reads of kept paths (during; after)',
      `${during.failures}; ${keptMissing} ${targets.readsServed.met ? 'met' : 'MISSED'}`,
    ],
    [`removed paths still served (sample of ${sample.length})`, String(garbageServed)],
  ];
  const width = Math.max(...rows.map((r) => r[0].length));
  console.log();
  for (const [k, v] of rows) console.log(`${k.padEnd(width)}  ${v}`);
  if (during.firstFailures.length > 0) console.log('first failures:', during.firstFailures);
  const commit = (
    await run('git', ['rev-parse', '--short', 'HEAD'], { cwd: ROOT }).catch(() => 'unknown')
  ).trim();
  const dirty =
    (await run('git', ['status', '--porcelain', 'src'], { cwd: ROOT }).catch(() => '')).trim() !== '';
  if (dirty) console.log('WARNING: src/ has uncommitted changes; these figures are not of a commit');
  console.log(
    JSON.stringify({
      bench: 'cache-gc',
      checkout: { commit, srcDirty: dirty },
      machine: { cpus: cpus().length, loadavg: loadavg().map((x) => Math.round(x * 100) / 100) },
      database: process.env.BENCH_DATABASE_URL ? 'postgres' : 'sqlite',
      paths: PATHS,
      pinnedPaths: kept.length,
      uploadSeconds: round1(uploadSeconds),
      dryRunMs: Math.round(dryMs),
      gcMs: Math.round(gcMs),
      removedPaths: gc.paths.length,
      removedNarFiles: gc.narFiles.length,
      bytesFreed: gc.bytesFreed,
      spared: gc.spared,
      readsAlone: baseline,
      readsDuring: during,
      phases,
      keptMissing,
      garbageServed,
      targets,
    }),
  );
  if (!Object.values(targets).every((t) => t.met)) process.exitCode = 1;
} finally {
  server?.kill('SIGTERM');
  if (server && server.exitCode === null) await new Promise((r) => server?.once('exit', r));
  await rm(dir, { recursive: true, force: true });
}
