/**
 * Unpacks NARs with Cairn (`unpackNar`, in-process, from a file stream) and with the peer,
 * `nix-store --restore` (stdin the same file), like for like: two NARs made by the real
 * `nix-store --dump`, one of a single large file and one of a tree of many small files; both
 * tools read the NAR from the page cache (it is read once before the runs) and write to the same
 * file system, after a `sync` so that no run pays for the previous one's writes; the two
 * alternate, each run's output is removed before the next, the first round is a warm-up, and
 * the median of the rest counts. The peer's figures include starting a process; that start alone
 * (restoring a NAR of one empty file) is shown beside them. Cairn's extra RSS while unpacking the
 * large file is measured too, and both outputs are checked against the NAR hash of the input.
 * Usage: node --import tsx bench/nar-unpack.ts [--mib 200] [--files 10000] [--runs 5]
 * The last line is a JSON object with the figures. Exits 1 if extra RSS reaches 100 MB or an
 * output differs.
 */
import { spawn } from 'node:child_process';
import { createHash, randomFillSync } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { chmod, mkdir, mkdtemp, open, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import { parseNar } from '../src/nix/nar-parser.ts';
import { unpackNar } from '../src/nix/nar-unpack.ts';
import { encodeNix32 } from '../src/nix/nix32.ts';
import { nixEnv, run } from '../test/helpers/nix.ts';

const MIB = 1024 * 1024;
const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    mib: { type: 'string', default: '200' },
    files: { type: 'string', default: '10000' },
    runs: { type: 'string', default: '5' },
  },
});
const size = Number(positionals[0] ?? values.mib) * MIB;
const FILES = Number(values.files);
const RUNS = Number(values.runs);
const RSS_LIMIT_MB = 100;

/** Writes `bytes` of pseudo-random data, 1 MiB at a time. */
async function writeRandomFile(path: string, bytes: number): Promise<void> {
  const file = await open(path, 'w');
  try {
    for (let left = bytes; left > 0; left -= MIB) {
      await file.write(randomFillSync(Buffer.allocUnsafe(Math.min(MIB, left))));
    }
  } finally {
    await file.close();
  }
}

/**
 * A tree like a package's `share/` or a `node_modules`: `count` files of 100 B to 32 KiB
 * (log-uniform), two levels of directories, one file in 20 executable, one entry in 50 a symlink.
 */
async function writeSmallFiles(root: string, count: number): Promise<number> {
  let bytes = 0;
  let seed = 42;
  const next = () => {
    seed = (seed * 1103515245 + 12345) % 2 ** 31;
    return seed / 2 ** 31;
  };
  for (let i = 0; i < count; i++) {
    const dir = join(root, `d${i % 20}`, `e${Math.floor(i / 20) % 25}`);
    await mkdir(dir, { recursive: true });
    const name = join(dir, `f${i}`);
    if (i % 50 === 49) {
      await symlink(`../e0/f${i % 20}`, name);
      continue;
    }
    const n = Math.round(100 * 328 ** next());
    await writeFile(name, randomFillSync(Buffer.allocUnsafe(n)));
    if (i % 20 === 7) await chmod(name, 0o755);
    bytes += n;
  }
  return bytes;
}

/** Samples RSS every 20 ms while `work` runs; returns the peak seen. */
async function peakRss(work: () => Promise<void>): Promise<number> {
  let peak = process.memoryUsage.rss();
  const timer = setInterval(() => {
    peak = Math.max(peak, process.memoryUsage.rss());
  }, 20);
  try {
    await work();
  } finally {
    clearInterval(timer);
  }
  return Math.max(peak, process.memoryUsage.rss());
}

/** `nix-store --restore target` with the NAR file as its stdin, as `< file` in a shell. */
async function nixStoreRestore(nar: string, target: string): Promise<void> {
  const input = await open(nar, 'r');
  try {
    const child = spawn('nix-store', ['--restore', target], {
      env: nixEnv(),
      stdio: [input.fd, 'ignore', 'inherit'],
    });
    await new Promise<void>((resolve, reject) => {
      child.on('error', reject);
      child.on('close', (code) =>
        code === 0 ? resolve() : reject(new Error(`nix-store --restore exited ${code}`)),
      );
    });
  } finally {
    await input.close();
  }
}

async function dump(path: string, nar: string): Promise<void> {
  const child = spawn('nix-store', ['--dump', path], { env: nixEnv(), stdio: ['ignore', 'pipe', 'inherit'] });
  await Promise.all([
    pipeline(child.stdout, createWriteStream(nar)),
    new Promise<void>((resolve, reject) =>
      child.on('close', (code) =>
        code === 0 ? resolve() : reject(new Error(`nix-store --dump exited ${code}`)),
      ),
    ),
  ]);
}

const nixHash = async (path: string) =>
  (await run('nix-hash', ['--type', 'sha256', '--base32', path])).trim();
const mb = (bytes: number) => Math.round((bytes / 1e6) * 10) / 10;
const mibps = (bytes: number, ms: number) => Math.round(bytes / MIB / (ms / 1000));
const median = (xs: readonly number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const timed = async (f: () => Promise<void>) => {
  const t = performance.now();
  await f();
  return performance.now() - t;
};

/**
 * Unpacks `nar` with both tools RUNS + 1 times, alternating which goes first; the first round is
 * a warm-up. Checks both outputs of the last round against `narHash`.
 */
async function compare(dir: string, nar: string, narHash: string) {
  await pipeline(createReadStream(nar), createWriteStream('/dev/null')); // into the page cache
  const outCairn = join(dir, 'out-cairn');
  const outNix = join(dir, 'out-nix-store');
  const tools = {
    cairn: () => unpackNar(createReadStream(nar), outCairn),
    nixStore: () => nixStoreRestore(nar, outNix),
  };
  const times: Record<keyof typeof tools, number[]> = { cairn: [], nixStore: [] };
  for (let r = 0; r <= RUNS; r++) {
    const order = r % 2 === 0 ? (['cairn', 'nixStore'] as const) : (['nixStore', 'cairn'] as const);
    for (const tool of order) {
      await rm(tool === 'cairn' ? outCairn : outNix, { recursive: true, force: true });
      await run('sync', []);
      const ms = await timed(tools[tool]);
      if (r > 0) times[tool].push(ms);
    }
  }
  const matches = (await nixHash(outCairn)) === narHash && (await nixHash(outNix)) === narHash;
  await rm(outCairn, { recursive: true, force: true });
  await rm(outNix, { recursive: true, force: true });
  const narBytes = (await stat(nar)).size;
  return {
    narBytes,
    cairnMs: Math.round(median(times.cairn)),
    cairnMiBps: mibps(narBytes, median(times.cairn)),
    nixStoreMs: Math.round(median(times.nixStore)),
    nixStoreMiBps: mibps(narBytes, median(times.nixStore)),
    cairnRunsMs: times.cairn.map(Math.round),
    nixStoreRunsMs: times.nixStore.map(Math.round),
    outputsMatch: matches,
  };
}

const dir = await mkdtemp(join(tmpdir(), 'cairn-bench-nar-'));
try {
  console.log(`in ${dir}: a ${size / MIB} MiB file and a tree of ${FILES} small files, and their NARs`);
  const big = join(dir, 'big');
  await writeRandomFile(big, size);
  const bigNar = join(dir, 'big.nar');
  await dump(big, bigNar);
  const bigHash = await nixHash(big);
  const tree = join(dir, 'tree');
  const treeBytes = await writeSmallFiles(tree, FILES);
  const treeNar = join(dir, 'tree.nar');
  await dump(tree, treeNar);
  const treeHash = await nixHash(tree);
  const empty = join(dir, 'empty');
  await writeFile(empty, '');
  const emptyNar = join(dir, 'empty.nar');
  await dump(empty, emptyNar);

  // Validation alone, as a server checks an upload while hashing it.
  const t = performance.now();
  const uploadHash = createHash('sha256');
  async function* hashed() {
    for await (const chunk of createReadStream(bigNar)) {
      uploadHash.update(chunk as Buffer);
      yield chunk as Buffer;
    }
  }
  for await (const _ of parseNar(hashed())) {
    // drain
  }
  const validateMs = performance.now() - t;
  const validatedHashMatches = encodeNix32(uploadHash.digest()) === bigHash;

  // Extra RSS of one unpack of the large file.
  globalThis.gc?.();
  await sleep(200);
  const baseline = process.memoryUsage.rss();
  const rssOut = join(dir, 'out-rss');
  const peak = await peakRss(() => unpackNar(createReadStream(bigNar), rssOut));
  await rm(rssOut, { force: true });

  // What starting nix-store costs: restoring a NAR of one empty file.
  const starts: number[] = [];
  for (let r = 0; r <= RUNS; r++) {
    const out = join(dir, 'out-empty');
    await rm(out, { force: true });
    const ms = await timed(() => nixStoreRestore(emptyNar, out));
    if (r > 0) starts.push(ms);
  }

  console.log(`unpacking each NAR ${RUNS + 1} times with each tool (the first for warm-up)`);
  const bigFigures = await compare(dir, bigNar, bigHash);
  const treeFigures = await compare(dir, treeNar, treeHash);
  const figures = {
    bench: 'nar-unpack',
    runs: RUNS,
    fileMiB: size / MIB,
    files: FILES,
    filesBytes: treeBytes,
    baselineRssMB: mb(baseline),
    peakRssMB: mb(peak),
    extraRssMB: mb(peak - baseline),
    extraRssUnderLimit: peak - baseline < RSS_LIMIT_MB * 1e6,
    validateMiBps: mibps(bigFigures.narBytes, validateMs),
    validatedHashMatches,
    nixStoreStartMs: Math.round(median(starts)),
    bigFile: bigFigures,
    smallFiles: treeFigures,
  };
  const row = (label: string, f: typeof bigFigures) =>
    console.log(
      `${label.padEnd(30)} cairn ${String(f.cairnMs).padStart(6)} ms (${f.cairnMiBps} MiB/s)   ` +
        `nix-store --restore ${String(f.nixStoreMs).padStart(6)} ms (${f.nixStoreMiBps} MiB/s)   ` +
        `outputs match: ${f.outputsMatch}`,
    );
  console.log(
    `extra RSS      ${figures.extraRssMB} MB (limit ${RSS_LIMIT_MB} MB; baseline ${figures.baselineRssMB} MB)`,
  );
  console.log(`validate+hash  ${figures.validateMiBps} MiB/s`);
  row(`1 file of ${size / MIB} MiB, median`, bigFigures);
  row(`${FILES} files (${(treeBytes / MIB).toFixed(0)} MiB), median`, treeFigures);
  console.log(`starting nix-store (a NAR of one empty file): ${figures.nixStoreStartMs} ms, included above`);
  console.log(JSON.stringify(figures));
  const ok =
    figures.extraRssUnderLimit && validatedHashMatches && bigFigures.outputsMatch && treeFigures.outputsMatch;
  if (!ok) process.exitCode = 1;
} finally {
  await rm(dir, { recursive: true, force: true });
}
