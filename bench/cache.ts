/**
 * Benchmarks Cairn's binary cache against nginx (Debian package) serving the same files from disk.
 *
 * Starts `cairn server` from this checkout (src/main.ts, as a child process) on a fresh data dir,
 * creates a public cache and a private one with a pull token, builds a 200 MiB store path and a
 * few small ones with the real Nix and uploads them to both with `nix copy --to ...?compression=none`,
 * copies what Cairn serves (nix-cache-info, narinfos, NAR files) into a directory served by nginx,
 * the private cache's copy behind `auth_basic`, then measures both under the same URLs:
 *   1. sequential narinfo GET latency on one keep-alive connection (a raw-socket client), for a
 *      narinfo the cache holds and, for information, for one it does not (404);
 *   2. narinfo GETs per second with many connections (`wrk -t2 -c64 -d10s`);
 *   3. NAR download MiB/s on one connection for the 200 MiB NAR (`curl`, best of 3), public only.
 * 1 and 2 are measured twice: on the public cache without credentials, and on the private cache
 * with `Authorization: Basic` of the pull token on every request, as Nix sends it from a netrc
 * file (nginx checks the same credential against a htpasswd file).
 * Prints a table with the ratio of each pair, and as the last line a JSON object with all figures.
 * Exits 1 when a target is missed (latency within 1.5x of nginx on both caches, NAR throughput at
 * least 80%).
 *
 * Usage: node --import tsx bench/cache.ts (needs nix, nginx, wrk and curl: apt-get install nginx-light wrk)
 * Environment: BENCH_NAR_MIB (default 200), BENCH_LATENCY_REQUESTS (default 5000),
 * BENCH_WRK_SECONDS (default 10): smaller values only to check that the bench works.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
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
const LATENCY_REQUESTS = Number(process.env.BENCH_LATENCY_REQUESTS ?? 5000);
const LATENCY_WARMUP = Math.round(LATENCY_REQUESTS * 0.4);
const WRK_ARGS = ['-t2', '-c64', `-d${Number(process.env.BENCH_WRK_SECONDS ?? 10)}s`];
const NAR_TRIES = 3;
const TARGET_LATENCY_RATIO = 1.5;
const TARGET_NAR_RATIO = 0.8;
/** A revoked pull token must be refused within this (issue #19). */
const TARGET_REVOKED_MS = 5000;
const CACHE = 'bench';
const PRIVATE_CACHE = 'bench-private';
/** The netrc login the agent writes for a private cache; Cairn ignores it, nginx checks it. */
const NETRC_LOGIN = 'cairn';
const HOST = '127.0.0.1';
const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');

/** narinfo figures of one server on one cache. */
interface NarinfoFigures {
  latencyP50Us: number;
  latencyMeanUs: number;
  latencyP99Us: number;
  missP50Us: number;
  narinfoReqPerSec: number;
}

interface Figures extends NarinfoFigures {
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
  options: { status?: number; authorization?: string | undefined } = {},
): Promise<number[]> {
  const status = options.status ?? 200;
  const auth = options.authorization === undefined ? '' : `Authorization: ${options.authorization}\r\n`;
  const request = Buffer.from(
    `GET ${path} HTTP/1.1\r\nHost: ${HOST}:${port}\r\nUser-Agent: bench\r\n${auth}\r\n`,
  );
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
async function wrk(args: string[], url: string, authorization?: string): Promise<number> {
  const header = authorization === undefined ? [] : ['-H', `Authorization: ${authorization}`];
  const out = await run('wrk', [...args, ...header, url], { env: process.env });
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

async function fetchToFile(url: string, file: string, headers?: Record<string, string>): Promise<number> {
  const res = await fetch(url, headers ? { headers } : {});
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

const NAMES = ['cairn', 'nginx'] as const;
type Name = (typeof NAMES)[number];

/**
 * Runs `f` against both servers, one after the other, so that a burst of load from elsewhere on
 * the machine does not land on one server's figures only.
 */
async function each<T>(
  ports: Record<Name, number>,
  label: string,
  f: (port: number) => Promise<T>,
): Promise<Record<Name, T>> {
  const out = {} as Record<Name, T>;
  process.stdout.write(`${label}:`);
  for (const name of NAMES) {
    process.stdout.write(` ${name}`);
    out[name] = await f(ports[name]);
  }
  process.stdout.write('\n');
  return out;
}

/**
 * Measures narinfo latency (hit and miss) and throughput on both servers, one metric at a time,
 * each request carrying `authorization` when given.
 */
async function measureNarinfo(
  ports: Record<Name, number>,
  label: string,
  narinfoPath: string,
  authorization?: string,
): Promise<Record<Name, NarinfoFigures>> {
  const hits = await each(ports, `${label} narinfo latency`, (port) =>
    sequentialLatency(port, narinfoPath, LATENCY_WARMUP, LATENCY_REQUESTS, { authorization }),
  );
  const missPath = `${dirname(narinfoPath)}/${'0'.repeat(32)}.narinfo`;
  const misses = await each(ports, `${label} miss latency`, (port) =>
    sequentialLatency(port, missPath, LATENCY_WARMUP, LATENCY_REQUESTS, { status: 404, authorization }),
  );
  const reqPerSec = await each(ports, `${label} wrk ${WRK_ARGS.join(' ')}`, (port) =>
    wrk(WRK_ARGS, `http://${HOST}:${port}${narinfoPath}`, authorization),
  );
  const figures = (name: Name): NarinfoFigures => {
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
    };
  };
  return { cairn: figures('cairn'), nginx: figures('nginx') };
}

/** Downloads the NAR from both servers NAR_TRIES times, alternating; MiB/s of each try. */
async function measureNar(
  ports: Record<Name, number>,
  narPath: string,
  narBytes: number,
): Promise<Record<Name, number[]>> {
  const nar: Record<Name, number[]> = { cairn: [], nginx: [] };
  for (let i = 0; i < NAR_TRIES; i++) {
    const got = await each(ports, `NAR download ${i + 1}`, (port) =>
      download(`http://${HOST}:${port}${narPath}`, narBytes),
    );
    for (const name of NAMES) nar[name].push(got[name]);
  }
  return nar;
}

/**
 * How soon a revoked pull token is refused: a client reads a private narinfo with a token in a
 * loop on one keep-alive connection (so the token is remembered, as for any busy netrc client)
 * while the admin revokes it through the API. Returns the time from sending the revocation to the
 * first 401, and how many narinfos were still served with it after the revocation was answered.
 */
async function measureRevocation(
  base: string,
  narinfoPath: string,
  adminToken: string,
): Promise<{ refusedAfterMs: number; servedAfterRevokeAnswered: number; requestsBefore: number }> {
  const api = (method: string, path: string, body?: unknown) =>
    fetch(`${base}/api/v1/workspaces/default/${path}`, {
      method,
      headers: { Authorization: `Bearer ${adminToken}`, 'Content-Type': 'application/json' },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
  const created = (await (
    await api('POST', 'tokens', { name: 'bench revoked', scopes: [`cache:${PRIVATE_CACHE}:pull`] })
  ).json()) as { id: string; token: string };
  const auth = `Basic ${Buffer.from(`${NETRC_LOGIN}:${created.token}`).toString('base64')}`;
  let revokeSent = 0;
  let revokeAnswered = 0;
  let refusedAt = 0;
  let servedAfter = 0;
  let before = 0;
  const reader = (async () => {
    for (;;) {
      const res = await fetch(`${base}${narinfoPath}`, { headers: { Authorization: auth } });
      await res.arrayBuffer();
      if (res.status === 401) {
        refusedAt = performance.now();
        return;
      }
      if (res.status !== 200) throw new Error(`narinfo with the token to revoke: ${res.status}`);
      if (revokeAnswered > 0) servedAfter++;
      if (revokeSent === 0) before++;
      if (refusedAt === 0 && revokeSent > 0 && performance.now() - revokeSent > 60_000) {
        throw new Error('the revoked token was still served a minute later');
      }
    }
  })();
  await sleep(1000);
  revokeSent = performance.now();
  const revoked = await api('DELETE', `tokens/${created.id}`);
  revokeAnswered = performance.now();
  if (!revoked.ok) throw new Error(`DELETE tokens/${created.id}: ${revoked.status} ${await revoked.text()}`);
  await reader;
  return {
    refusedAfterMs: Math.round((refusedAt - revokeSent) * 10) / 10,
    servedAfterRevokeAnswered: servedAfter,
    requestsBefore: before,
  };
}

function round(x: number): number {
  return Math.round(x * 10) / 10;
}

/**
 * A htpasswd line in nginx's `{SSHA}` scheme: one salted SHA-1, the same class of cost as the one
 * SHA-256 Cairn computes per request. Tokens are random, so neither side needs a slow hash; an
 * `apr1` or `$6$` entry would cost nginx a thousand rounds or more per request and flatter Cairn.
 */
function htpasswdLine(user: string, password: string): string {
  const salt = randomBytes(8);
  const digest = createHash('sha1').update(password).update(salt).digest();
  return `${user}:{SSHA}${Buffer.concat([digest, salt]).toString('base64')}\n`;
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
    location /cache/${PRIVATE_CACHE}/ {
      auth_basic "cairn";
      auth_basic_user_file ${prefix}/htpasswd;
    }
  }
}
`;
}

/**
 * The commit of this checkout, and whether src/ differs from it: the figures are those of the
 * committed code only when `srcDirty` is false.
 */
async function checkout(): Promise<{ commit: string; srcDirty: boolean }> {
  const git = (args: string[]) => run('git', ['-C', ROOT, ...args], { env: process.env });
  const commit = (await git(['rev-parse', 'HEAD']).catch(() => 'unknown')).trim();
  const status = await git(['status', '--porcelain', '--', 'src']).catch(() => '?');
  return { commit, srcDirty: status.trim() !== '' };
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
  const code = await checkout();
  console.log(
    `machine: ${info.cpus} CPU (${info.cpuModel}), node ${info.node}, nginx ${info.nginx}, wrk ${info.wrk}`,
  );
  console.log(
    `cairn: ${ROOT}/src at ${code.commit}${code.srcDirty ? ' WITH UNCOMMITTED CHANGES in src/ (not the committed code)' : ''}`,
  );
  console.log('note: client and servers share the CPUs; wrk and curl compete with the server they measure');

  // Cairn from this checkout on a fresh data dir, as a child process like `cairn server`.
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
  const api = async (path: string, body: unknown): Promise<Record<string, unknown>> => {
    const res = await fetch(`${cairnUrl}/api/v1/workspaces/default/${path}`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' },
      body: JSON.stringify(body),
    });
    if (!res.ok) throw new Error(`POST ${path}: ${res.status} ${await res.text()}`);
    return (await res.json()) as Record<string, unknown>;
  };
  await api('caches', { name: CACHE, public: true });
  await api('caches', { name: PRIVATE_CACHE, public: false });
  const pullToken = String(
    (await api('tokens', { name: 'bench pull', scopes: [`cache:${PRIVATE_CACHE}:pull`] })).token,
  );
  // What Nix sends with a netrc entry `machine 127.0.0.1 login cairn password <token>`.
  const pullAuth = `Basic ${Buffer.from(`${NETRC_LOGIN}:${pullToken}`).toString('base64')}`;

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
  let uploadSeconds = 0;
  for (const cache of [CACHE, PRIVATE_CACHE]) {
    console.log(`uploading to ${cache} with nix copy (compression=none)`);
    const t0 = performance.now();
    await run(
      'nix',
      [
        'copy',
        '--to',
        `${cairnUrl}/cache/${cache}?compression=none`,
        '--option',
        'netrc-file',
        netrc,
        ...storePaths,
      ],
      { env: nixEnv() },
    );
    if (cache === CACHE) uploadSeconds = (performance.now() - t0) / 1000;
  }

  // The same files, as Cairn serves them, in a directory for nginx.
  const mirror = join(dir, 'mirror');
  const mirrorCache = async (cache: string, authorization?: string) => {
    const headers = authorization === undefined ? undefined : { Authorization: authorization };
    const prefix = `/cache/${cache}`;
    await fetchToFile(`${cairnUrl}${prefix}/nix-cache-info`, join(mirror, prefix, 'nix-cache-info'), headers);
    let narinfoPath = '';
    let narPath = '';
    let narBytes = 0;
    for (const path of storePaths) {
      const hashPart = basename(path).slice(0, 32);
      const file = join(mirror, prefix, `${hashPart}.narinfo`);
      await fetchToFile(`${cairnUrl}${prefix}/${hashPart}.narinfo`, file, headers);
      const url = /^URL: (\S+)$/m.exec(await readFile(file, 'utf8'))?.[1];
      if (!url) throw new Error(`${hashPart}.narinfo has no URL`);
      const size = await fetchToFile(`${cairnUrl}${prefix}/${url}`, join(mirror, prefix, url), headers);
      if (path === blobPath) {
        narinfoPath = `${prefix}/${hashPart}.narinfo`;
        narPath = `${prefix}/${url}`;
        narBytes = size;
      }
    }
    return { narinfoPath, narPath, narBytes };
  };
  const { narinfoPath, narPath, narBytes } = await mirrorCache(CACHE);
  const privateNarinfoPath = (await mirrorCache(PRIVATE_CACHE, pullAuth)).narinfoPath;
  console.log(
    `uploaded ${storePaths.length} paths in ${uploadSeconds.toFixed(1)} s; NAR ${narPath} is ${(narBytes / MIB).toFixed(1)} MiB`,
  );

  // nginx on the copy; the private cache's folder behind auth_basic with the pull token.
  const nginxPort = await freePort();
  const nginxDir = join(dir, 'nginx');
  await mkdir(nginxDir);
  await writeFile(join(nginxDir, 'htpasswd'), htpasswdLine(NETRC_LOGIN, pullToken), { mode: 0o600 });
  const conf = join(nginxDir, 'nginx.conf');
  await writeFile(conf, nginxConf(nginxDir, mirror, nginxPort));
  const nginx = startChild('nginx', ['-p', nginxDir, '-e', join(nginxDir, 'error.log'), '-c', conf]);
  children.push({ child: nginx.child, signal: 'SIGQUIT' });
  const nginxUrl = `http://${HOST}:${nginxPort}`;
  await waitFor(`${nginxUrl}/cache/${CACHE}/nix-cache-info`, 10_000, nginx.child).catch(
    async (err: Error) => {
      const log = await readFile(join(nginxDir, 'error.log'), 'utf8').catch(() => '');
      throw new Error(`${err.message}\n${nginx.stderr()}${log}`);
    },
  );
  // Both serve the same bytes, and both check the credential of the private cache.
  for (const [path, authorization] of [
    [narinfoPath, undefined],
    [privateNarinfoPath, pullAuth],
  ] as const) {
    const [a, b] = await Promise.all(
      [cairnUrl, nginxUrl].map(async (u) => {
        const res = await fetch(u + path, authorization ? { headers: { Authorization: authorization } } : {});
        if (res.status !== 200) throw new Error(`GET ${u}${path}: ${res.status}`);
        return await res.text();
      }),
    );
    if (a !== b) throw new Error(`Cairn and nginx serve different narinfos at ${path}`);
  }
  const wrongAuth = `Basic ${Buffer.from(`${NETRC_LOGIN}:${pullToken.slice(0, -1)}${pullToken.endsWith('A') ? 'B' : 'A'}`).toString('base64')}`;
  for (const base of [cairnUrl, nginxUrl]) {
    for (const headers of [undefined, { Authorization: wrongAuth }]) {
      const res = await fetch(base + privateNarinfoPath, headers ? { headers } : {});
      await res.arrayBuffer();
      if (res.status !== 401) {
        throw new Error(
          `GET ${base}${privateNarinfoPath} ${headers ? 'with a wrong token' : 'without a token'}: ${res.status}, expected 401`,
        );
      }
    }
  }

  const t = performance.now();
  const ports = { cairn: cairnPort, nginx: nginxPort };
  const publicNarinfo = await measureNarinfo(ports, 'public', narinfoPath);
  const privateNarinfo = await measureNarinfo(ports, 'private', privateNarinfoPath, pullAuth);
  const nar = await measureNar(ports, narPath, narBytes);
  const revocation = await measureRevocation(cairnUrl, privateNarinfoPath, token);
  const withNar = (name: Name): Figures => ({
    ...publicNarinfo[name],
    narMiBps: round(Math.max(...nar[name])),
    narMiBpsRuns: nar[name].map(round),
  });
  const cairnFigures = withNar('cairn');
  const nginxFigures = withNar('nginx');

  const ratio = (x: number, y: number) => Math.round((x / y) * 100) / 100;
  const narinfoRatios = (c: NarinfoFigures, n: NarinfoFigures) => ({
    latencyP50: ratio(c.latencyP50Us, n.latencyP50Us),
    latencyMean: ratio(c.latencyMeanUs, n.latencyMeanUs),
    latencyP99: ratio(c.latencyP99Us, n.latencyP99Us),
    missP50: ratio(c.missP50Us, n.missP50Us),
    narinfoReqPerSec: ratio(c.narinfoReqPerSec, n.narinfoReqPerSec),
  });
  const ratios = {
    ...narinfoRatios(cairnFigures, nginxFigures),
    narMiBps: ratio(cairnFigures.narMiBps, nginxFigures.narMiBps),
  };
  const privateRatios = narinfoRatios(privateNarinfo.cairn, privateNarinfo.nginx);
  const latencyTarget = (r: number) => ({
    max: TARGET_LATENCY_RATIO,
    ratio: r,
    met: r <= TARGET_LATENCY_RATIO,
  });
  const targets = {
    revokedRefused: {
      maxMs: TARGET_REVOKED_MS,
      ms: revocation.refusedAfterMs,
      met: revocation.refusedAfterMs <= TARGET_REVOKED_MS && revocation.servedAfterRevokeAnswered === 0,
    },
    narinfoLatency: latencyTarget(ratios.latencyP50),
    privateNarinfoLatency: latencyTarget(privateRatios.latencyP50),
    narThroughput: {
      min: TARGET_NAR_RATIO,
      ratio: ratios.narMiBps,
      met: ratios.narMiBps >= TARGET_NAR_RATIO,
    },
  };

  const mark = (met: boolean) => (met ? 'met' : 'MISSED');
  const narinfoRows = (
    label: string,
    c: NarinfoFigures,
    n: NarinfoFigures,
    r: ReturnType<typeof narinfoRatios>,
    target: { met: boolean },
  ): [string, string, string, string, string][] => [
    [
      `${label} narinfo latency p50, 1 conn (µs)`,
      String(c.latencyP50Us),
      String(n.latencyP50Us),
      `${r.latencyP50}x`,
      `<= ${TARGET_LATENCY_RATIO}x ${mark(target.met)}`,
    ],
    [
      `${label} narinfo latency mean, 1 conn (µs)`,
      String(c.latencyMeanUs),
      String(n.latencyMeanUs),
      `${r.latencyMean}x`,
      '',
    ],
    [
      `${label} narinfo latency p99, 1 conn (µs)`,
      String(c.latencyP99Us),
      String(n.latencyP99Us),
      `${r.latencyP99}x`,
      '',
    ],
    [
      `${label} narinfo miss (404) p50, 1 conn (µs)`,
      String(c.missP50Us),
      String(n.missP50Us),
      `${r.missP50}x`,
      '',
    ],
    [
      `${label} narinfo req/s, wrk ${WRK_ARGS.join(' ')}`,
      String(c.narinfoReqPerSec),
      String(n.narinfoReqPerSec),
      `${r.narinfoReqPerSec}x`,
      '',
    ],
  ];
  const rows: [string, string, string, string, string][] = [
    ['', 'cairn', 'nginx', 'cairn/nginx', 'target'],
    ...narinfoRows('public', cairnFigures, nginxFigures, ratios, targets.narinfoLatency),
    ...narinfoRows(
      'private',
      privateNarinfo.cairn,
      privateNarinfo.nginx,
      privateRatios,
      targets.privateNarinfoLatency,
    ),
    [
      `public NAR ${Math.round(narBytes / MIB)} MiB, 1 conn (MiB/s, best of ${NAR_TRIES})`,
      String(cairnFigures.narMiBps),
      String(nginxFigures.narMiBps),
      `${ratios.narMiBps}x`,
      `>= ${TARGET_NAR_RATIO}x ${mark(targets.narThroughput.met)}`,
    ],
  ];
  rows.push([
    'revoked pull token: first 401 after the revocation was sent (ms)',
    String(revocation.refusedAfterMs),
    '',
    '',
    `<= ${TARGET_REVOKED_MS} ms ${mark(targets.revokedRefused.met)}`,
  ]);
  rows.push([
    'narinfos served with it after the revocation was answered',
    String(revocation.servedAfterRevokeAnswered),
    '',
    '',
    '0',
  ]);
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
      checkout: code,
      narBytes,
      latencyRequests: LATENCY_REQUESTS,
      wrk: WRK_ARGS.join(' '),
      cairn: cairnFigures,
      nginx: nginxFigures,
      ratios,
      private: { cairn: privateNarinfo.cairn, nginx: privateNarinfo.nginx, ratios: privateRatios },
      revocation,
      targets,
    }),
  );
  if (!Object.values(targets).every((x) => x.met)) process.exitCode = 1;
} finally {
  for (const { child, signal } of children.reverse()) await stopChild(child, signal);
  await rm(dir, { recursive: true, force: true });
  // The 200 MiB store path is not a GC root: remove it so runs do not pile up in /nix/store.
  if (storePaths.length > 0) await run('nix-store', ['--delete', ...storePaths]).catch(() => {});
}
