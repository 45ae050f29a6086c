/**
 * Benchmarks Cairn's binary cache against nginx (Debian package) serving the same files from disk.
 *
 * Starts `cairn server` as a child process on a fresh data dir, creates a public cache, builds a
 * 200 MiB store path and a few small ones with the real Nix and uploads them with
 * `nix copy --to ...?compression=none`, copies what Cairn serves (nix-cache-info, narinfos, NAR
 * files) into a directory served by nginx, then measures both under the same URLs:
 *   1. sequential narinfo GET latency on one keep-alive connection (a raw-socket client), for a
 *      narinfo the cache holds and, for information, for one it does not (404);
 *   2. narinfo GETs per second with many connections (`wrk -t2 -c64 -d10s`);
 *   3. NAR download MiB/s on one connection for the 200 MiB NAR (`curl`, best of 3).
 * Prints a table with the ratio of each pair, and as the last line a JSON object with all figures.
 * Exits 1 when a target is missed (latency within 1.5x of nginx, NAR throughput at least 80%).
 *
 * Usage: node --import tsx bench/cache.ts (needs nix, nginx, wrk and curl: apt-get install nginx-light wrk)
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { connect, createServer } from 'node:net';
import { cpus, tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { buildPackages, nixEnv, RUN_TAG, run } from '../test/helpers/nix.ts';

const MIB = 1024 * 1024;
const NAR_BYTES = Number(process.env.BENCH_NAR_MIB ?? 200) * MIB;
const LATENCY_WARMUP = 2000;
const LATENCY_REQUESTS = 5000;
const WRK_ARGS = ['-t2', '-c64', '-d10s'];
const NAR_TRIES = 3;
const TARGET_LATENCY_RATIO = 1.5;
const TARGET_NAR_RATIO = 0.8;
const CACHE = 'bench';
const HOST = '127.0.0.1';
const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');

interface Figures {
  latencyP50Us: number;
  latencyMeanUs: number;
  latencyP99Us: number;
  missP50Us: number;
  narinfoReqPerSec: number;
  narMiBps: number;
  narMiBpsRuns: number[];
}

/** A port free at the time of asking. */
async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, HOST, resolve));
  const { port } = server.address() as { port: number };
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** Polls a URL until it answers 200, or throws after `ms`. */
async function waitFor(url: string, ms: number, child: ChildProcess): Promise<void> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`${url}: the server exited with ${child.exitCode}`);
    try {
      const res = await fetch(url);
      await res.arrayBuffer();
      if (res.ok) return;
    } catch {
      // not listening yet
    }
    await sleep(100);
  }
  throw new Error(`${url} did not answer 200 within ${ms} ms`);
}

/** Starts a long-running child whose stderr is kept for the error message if it dies. */
function startChild(
  cmd: string,
  args: string[],
  cwd?: string,
): { child: ChildProcess; stderr: () => string } {
  let err = '';
  const child = spawn(cmd, args, { cwd, stdio: ['ignore', 'ignore', 'pipe'] });
  child.stderr?.on('data', (d: Buffer) => {
    err = (err + d.toString()).slice(-4000);
  });
  return { child, stderr: () => err };
}

async function stopChild(child: ChildProcess, signal: NodeJS.Signals): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill(signal);
  const killed = await Promise.race([exited.then(() => true), sleep(15_000).then(() => false)]);
  if (!killed) {
    child.kill('SIGKILL');
    await exited;
  }
}

/**
 * Sends `warmup + count` GETs one after another on one keep-alive connection, each written as
 * soon as the previous answer is complete, and returns the latencies of the last `count` in µs.
 * A raw socket with a minimal parser: the client costs a few µs per request, the same for both
 * servers.
 */
async function sequentialLatency(
  port: number,
  path: string,
  warmup: number,
  count: number,
  status = 200,
): Promise<number[]> {
  const request = Buffer.from(`GET ${path} HTTP/1.1\r\nHost: ${HOST}:${port}\r\nUser-Agent: bench\r\n\r\n`);
  const socket = connect(port, HOST);
  socket.setNoDelay(true);
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
  const times = new Float64Array(count);
  return await new Promise<number[]>((resolve, reject) => {
    let done = 0;
    let buf: Buffer = Buffer.alloc(0);
    let started = 0n;
    const send = () => {
      started = process.hrtime.bigint();
      socket.write(request);
    };
    socket.on('error', reject);
    socket.on('close', () => reject(new Error(`connection closed after ${done} requests`)));
    socket.on('data', (chunk: Buffer) => {
      buf = buf.length === 0 ? chunk : Buffer.concat([buf, chunk]);
      const headerEnd = buf.indexOf('\r\n\r\n');
      if (headerEnd < 0) return;
      const head = buf.toString('latin1', 0, headerEnd);
      const length = Number(/\r\ncontent-length:\s*(\d+)/i.exec(head)?.[1] ?? Number.NaN);
      if (!head.startsWith(`HTTP/1.1 ${status} `) || Number.isNaN(length)) {
        reject(new Error(`unexpected answer to GET ${path}: ${head.split('\r\n')[0]}`));
        socket.destroy();
        return;
      }
      if (buf.length < headerEnd + 4 + length) return;
      const elapsed = Number(process.hrtime.bigint() - started) / 1000;
      if (done >= warmup) times[done - warmup] = elapsed;
      done++;
      buf = buf.subarray(headerEnd + 4 + length);
      if (done < warmup + count) {
        send();
        return;
      }
      socket.removeAllListeners('close');
      socket.destroy();
      resolve([...times]);
    });
    send();
  });
}

/** Runs wrk and returns its requests per second; fails on non-2xx answers or socket errors. */
async function wrk(args: string[], url: string): Promise<number> {
  const out = await run('wrk', [...args, url], { env: process.env });
  const reqPerSec = Number(/Requests\/sec:\s*([\d.]+)/.exec(out)?.[1]);
  const bad = /Non-2xx or 3xx responses:\s*(\d+)/.exec(out);
  const errors = /Socket errors:.*/.exec(out);
  if (bad || errors || Number.isNaN(reqPerSec)) {
    throw new Error(`wrk ${args.join(' ')} ${url} went wrong:\n${out}`);
  }
  return reqPerSec;
}

/** Downloads a URL with curl to /dev/null; returns MiB/s, checking the status and size. */
async function download(url: string, expectedBytes: number): Promise<number> {
  const out = await run(
    'curl',
    ['-s', '-o', '/dev/null', '-w', '%{http_code} %{size_download} %{speed_download}', url],
    { env: process.env },
  );
  const [code, size, speed] = out.trim().split(' ').map(Number);
  if (code !== 200 || size !== expectedBytes) {
    throw new Error(`GET ${url}: status ${code}, ${size} bytes (expected 200, ${expectedBytes})`);
  }
  return speed! / MIB;
}

async function fetchToFile(url: string, file: string): Promise<number> {
  const res = await fetch(url);
  if (!res.ok || !res.body) throw new Error(`GET ${url}: ${res.status}`);
  await mkdir(dirname(file), { recursive: true });
  await pipeline(
    Readable.fromWeb(res.body as import('node:stream/web').ReadableStream),
    createWriteStream(file),
  );
  return (await stat(file)).size;
}

function percentile(sorted: readonly number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

/**
 * Measures both servers, one metric at a time and alternating between them, so that a burst of
 * load from elsewhere on the machine does not land on one server's figures only.
 */
async function measureBoth(
  ports: { cairn: number; nginx: number },
  narinfoPath: string,
  narPath: string,
  narBytes: number,
): Promise<{ cairn: Figures; nginx: Figures }> {
  const names = ['cairn', 'nginx'] as const;
  const each = async <T>(label: string, f: (port: number) => Promise<T>) => {
    const out = {} as Record<(typeof names)[number], T>;
    process.stdout.write(`${label}:`);
    for (const name of names) {
      process.stdout.write(` ${name}`);
      out[name] = await f(ports[name]);
    }
    process.stdout.write('\n');
    return out;
  };
  const hits = await each('narinfo latency', (port) =>
    sequentialLatency(port, narinfoPath, LATENCY_WARMUP, LATENCY_REQUESTS),
  );
  const missPath = `${dirname(narinfoPath)}/${'0'.repeat(32)}.narinfo`;
  const misses = await each('miss latency', (port) =>
    sequentialLatency(port, missPath, LATENCY_WARMUP, LATENCY_REQUESTS, 404),
  );
  const reqPerSec = await each(`wrk ${WRK_ARGS.join(' ')}`, (port) =>
    wrk(WRK_ARGS, `http://${HOST}:${port}${narinfoPath}`),
  );
  const nar = { cairn: [] as number[], nginx: [] as number[] };
  for (let i = 0; i < NAR_TRIES; i++) {
    const got = await each(`NAR download ${i + 1}`, (port) =>
      download(`http://${HOST}:${port}${narPath}`, narBytes),
    );
    for (const name of names) nar[name].push(got[name]);
  }
  const figures = (name: (typeof names)[number]): Figures => {
    const times = hits[name].sort((a, b) => a - b);
    return {
      latencyP50Us: round(percentile(times, 50)),
      latencyMeanUs: round(times.reduce((a, b) => a + b, 0) / times.length),
      latencyP99Us: round(percentile(times, 99)),
      missP50Us: round(
        percentile(
          misses[name].sort((a, b) => a - b),
          50,
        ),
      ),
      narinfoReqPerSec: Math.round(reqPerSec[name]),
      narMiBps: round(Math.max(...nar[name])),
      narMiBpsRuns: nar[name].map(round),
    };
  };
  return { cairn: figures('cairn'), nginx: figures('nginx') };
}

function round(x: number): number {
  return Math.round(x * 10) / 10;
}

function nginxConf(prefix: string, root: string, port: number): string {
  const user = process.getuid?.() === 0 ? 'user root;\n' : '';
  return `${user}daemon off;
worker_processes auto;
pid ${prefix}/nginx.pid;
error_log ${prefix}/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  tcp_nodelay on;
  keepalive_timeout 65;
  keepalive_requests 1000000;
  client_body_temp_path ${prefix}/body;
  proxy_temp_path ${prefix}/proxy;
  fastcgi_temp_path ${prefix}/fastcgi;
  uwsgi_temp_path ${prefix}/uwsgi;
  scgi_temp_path ${prefix}/scgi;
  types { text/x-nix-narinfo narinfo; application/x-nix-nar nar; }
  default_type application/octet-stream;
  server {
    listen ${HOST}:${port};
    root ${root};
  }
}
`;
}

async function machine(): Promise<Record<string, string | number>> {
  const cpuinfo = await readFile('/proc/cpuinfo', 'utf8').catch(() => '');
  const nginx = (await run('sh', ['-c', 'nginx -v 2>&1'], { env: process.env })).trim();
  return {
    cpus: cpus().length,
    cpuModel: /^model name\s*:\s*(.*)$/m.exec(cpuinfo)?.[1] ?? cpus()[0]?.model ?? 'unknown',
    node: process.version,
    nginx: nginx.replace(/^nginx version: nginx\//, ''),
    wrk: (await run('sh', ['-c', 'wrk -v 2>&1 | head -1'], { env: process.env })).trim().split(' ')[1] ?? '',
  };
}

for (const tool of ['nix-build', 'nix', 'nginx', 'wrk', 'curl']) {
  try {
    await run('sh', ['-c', `command -v ${tool}`], { env: process.env });
  } catch {
    console.error(`bench/cache needs ${tool} on PATH (apt-get install -y nix-bin nginx-light wrk curl)`);
    process.exit(2);
  }
}

const dir = await mkdtemp(join(tmpdir(), 'cairn-bench-cache-'));
const children: { child: ChildProcess; signal: NodeJS.Signals }[] = [];
let storePaths: string[] = [];
try {
  const info = await machine();
  console.log(
    `machine: ${info.cpus} CPU (${info.cpuModel}), node ${info.node}, nginx ${info.nginx}, wrk ${info.wrk}`,
  );
  console.log('note: client and servers share the CPUs; wrk and curl compete with the server they measure');

  // Cairn on a fresh data dir, as a child process like `cairn server`.
  const cairnPort = await freePort();
  const dataDir = join(dir, 'cairn');
  const cairn = startChild(
    process.execPath,
    [
      '--import',
      'tsx',
      join(ROOT, 'src/main.ts'),
      'server',
      '--listen',
      `${HOST}:${cairnPort}`,
      '--data-dir',
      dataDir,
      '--log-level',
      'silent',
    ],
    ROOT,
  );
  children.push({ child: cairn.child, signal: 'SIGTERM' });
  const cairnUrl = `http://${HOST}:${cairnPort}`;
  await waitFor(`${cairnUrl}/healthz`, 30_000, cairn.child).catch((err: Error) => {
    throw new Error(`${err.message}\n${cairn.stderr()}`);
  });
  const token = (await readFile(join(dataDir, 'admin-token'), 'utf8')).trim();
  const created = await fetch(`${cairnUrl}/api/v1/workspaces/default/caches`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' },
    body: JSON.stringify({ name: CACHE, public: true }),
  });
  if (!created.ok) throw new Error(`cannot create cache: ${created.status} ${await created.text()}`);

  // Real content, built and uploaded by the real Nix.
  console.log(`building a ${NAR_BYTES / MIB} MiB store path and 3 small ones (run ${RUN_TAG})`);
  const built = await buildPackages([
    { name: 'bench-lib' },
    { name: 'bench-tool', deps: ['bench-lib'] },
    { name: 'bench-app', deps: ['bench-lib', 'bench-tool'] },
    { name: 'bench-blob', script: `head -c ${NAR_BYTES} /dev/urandom > $out` },
  ]);
  storePaths = [...built.values()];
  const blobPath = built.get('bench-blob')!;
  const netrc = join(dir, 'netrc');
  await writeFile(netrc, `machine ${HOST}\npassword ${token}\n`, { mode: 0o600 });
  console.log('uploading with nix copy (compression=none)');
  let t = performance.now();
  await run(
    'nix',
    [
      'copy',
      '--to',
      `${cairnUrl}/cache/${CACHE}?compression=none`,
      '--option',
      'netrc-file',
      netrc,
      ...storePaths,
    ],
    { env: nixEnv() },
  );
  const uploadSeconds = (performance.now() - t) / 1000;

  // The same files, as Cairn serves them, in a directory for nginx.
  const mirror = join(dir, 'mirror');
  const prefix = `/cache/${CACHE}`;
  await fetchToFile(`${cairnUrl}${prefix}/nix-cache-info`, join(mirror, prefix, 'nix-cache-info'));
  let narinfoPath = '';
  let narPath = '';
  let narBytes = 0;
  for (const path of storePaths) {
    const hashPart = basename(path).slice(0, 32);
    const file = join(mirror, prefix, `${hashPart}.narinfo`);
    await fetchToFile(`${cairnUrl}${prefix}/${hashPart}.narinfo`, file);
    const url = /^URL: (\S+)$/m.exec(await readFile(file, 'utf8'))?.[1];
    if (!url) throw new Error(`${hashPart}.narinfo has no URL`);
    const size = await fetchToFile(`${cairnUrl}${prefix}/${url}`, join(mirror, prefix, url));
    if (path === blobPath) {
      narinfoPath = `${prefix}/${hashPart}.narinfo`;
      narPath = `${prefix}/${url}`;
      narBytes = size;
    }
  }
  console.log(
    `uploaded ${storePaths.length} paths in ${uploadSeconds.toFixed(1)} s; NAR ${narPath} is ${(narBytes / MIB).toFixed(1)} MiB`,
  );

  // nginx on the copy.
  const nginxPort = await freePort();
  const nginxDir = join(dir, 'nginx');
  await mkdir(nginxDir);
  const conf = join(nginxDir, 'nginx.conf');
  await writeFile(conf, nginxConf(nginxDir, mirror, nginxPort));
  const nginx = startChild('nginx', ['-p', nginxDir, '-e', join(nginxDir, 'error.log'), '-c', conf]);
  children.push({ child: nginx.child, signal: 'SIGQUIT' });
  const nginxUrl = `http://${HOST}:${nginxPort}`;
  await waitFor(`${nginxUrl}${prefix}/nix-cache-info`, 10_000, nginx.child).catch(async (err: Error) => {
    const log = await readFile(join(nginxDir, 'error.log'), 'utf8').catch(() => '');
    throw new Error(`${err.message}\n${nginx.stderr()}${log}`);
  });
  const [a, b] = await Promise.all(
    [cairnUrl, nginxUrl].map(async (u) => await (await fetch(u + narinfoPath)).text()),
  );
  if (a !== b) throw new Error('Cairn and nginx serve different narinfos');

  t = performance.now();
  const { cairn: cairnFigures, nginx: nginxFigures } = await measureBoth(
    { cairn: cairnPort, nginx: nginxPort },
    narinfoPath,
    narPath,
    narBytes,
  );

  const ratio = (x: number, y: number) => Math.round((x / y) * 100) / 100;
  const ratios = {
    latencyP50: ratio(cairnFigures.latencyP50Us, nginxFigures.latencyP50Us),
    latencyMean: ratio(cairnFigures.latencyMeanUs, nginxFigures.latencyMeanUs),
    latencyP99: ratio(cairnFigures.latencyP99Us, nginxFigures.latencyP99Us),
    missP50: ratio(cairnFigures.missP50Us, nginxFigures.missP50Us),
    narinfoReqPerSec: ratio(cairnFigures.narinfoReqPerSec, nginxFigures.narinfoReqPerSec),
    narMiBps: ratio(cairnFigures.narMiBps, nginxFigures.narMiBps),
  };
  const targets = {
    narinfoLatency: {
      max: TARGET_LATENCY_RATIO,
      ratio: ratios.latencyP50,
      met: ratios.latencyP50 <= TARGET_LATENCY_RATIO,
    },
    narThroughput: {
      min: TARGET_NAR_RATIO,
      ratio: ratios.narMiBps,
      met: ratios.narMiBps >= TARGET_NAR_RATIO,
    },
  };

  const rows: [string, string, string, string, string][] = [
    ['', 'cairn', 'nginx', 'cairn/nginx', 'target'],
    [
      'narinfo latency p50, 1 conn (µs)',
      String(cairnFigures.latencyP50Us),
      String(nginxFigures.latencyP50Us),
      `${ratios.latencyP50}x`,
      `<= ${TARGET_LATENCY_RATIO}x ${targets.narinfoLatency.met ? 'met' : 'MISSED'}`,
    ],
    [
      'narinfo latency mean, 1 conn (µs)',
      String(cairnFigures.latencyMeanUs),
      String(nginxFigures.latencyMeanUs),
      `${ratios.latencyMean}x`,
      '',
    ],
    [
      'narinfo latency p99, 1 conn (µs)',
      String(cairnFigures.latencyP99Us),
      String(nginxFigures.latencyP99Us),
      `${ratios.latencyP99}x`,
      '',
    ],
    [
      'narinfo miss (404) p50, 1 conn (µs)',
      String(cairnFigures.missP50Us),
      String(nginxFigures.missP50Us),
      `${ratios.missP50}x`,
      '',
    ],
    [
      `narinfo req/s, wrk ${WRK_ARGS.join(' ')}`,
      String(cairnFigures.narinfoReqPerSec),
      String(nginxFigures.narinfoReqPerSec),
      `${ratios.narinfoReqPerSec}x`,
      '',
    ],
    [
      `NAR ${Math.round(narBytes / MIB)} MiB, 1 conn (MiB/s, best of ${NAR_TRIES})`,
      String(cairnFigures.narMiBps),
      String(nginxFigures.narMiBps),
      `${ratios.narMiBps}x`,
      `>= ${TARGET_NAR_RATIO}x ${targets.narThroughput.met ? 'met' : 'MISSED'}`,
    ],
  ];
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  console.log();
  for (const r of rows) {
    console.log(
      r.map((cell, i) => (i === 0 ? cell.padEnd(widths[i]!) : cell.padStart(widths[i]!))).join('  '),
    );
  }
  console.log();
  console.log(`measured in ${((performance.now() - t) / 1000).toFixed(0)} s`);
  console.log(
    JSON.stringify({
      bench: 'cache',
      machine: info,
      narBytes,
      latencyRequests: LATENCY_REQUESTS,
      wrk: WRK_ARGS.join(' '),
      cairn: cairnFigures,
      nginx: nginxFigures,
      ratios,
      targets,
    }),
  );
  if (!targets.narinfoLatency.met || !targets.narThroughput.met) process.exitCode = 1;
} finally {
  for (const { child, signal } of children.reverse()) await stopChild(child, signal);
  await rm(dir, { recursive: true, force: true });
  // The 200 MiB store path is not a GC root: remove it so runs do not pile up in /nix/store.
  if (storePaths.length > 0) await run('nix-store', ['--delete', ...storePaths]).catch(() => {});
}
