/**
 * Unpacks the NAR of one 200 MiB file with Cairn, in-process from a file stream, and prints
 * throughput and the RSS it costs; `nix-store --restore` on the same NAR is the peer.
 * Usage: node --import tsx bench/nar-unpack.ts [size in MiB]
 * The last line is a JSON object with the figures. Exits 1 if extra RSS reaches 100 MB or the
 * unpacked file differs.
 */
import { spawn } from 'node:child_process';
import { createHash, randomFillSync } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdtemp, open, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseNar } from '../src/nix/nar-parser.ts';
import { unpackNar } from '../src/nix/nar-unpack.ts';
import { encodeNix32 } from '../src/nix/nix32.ts';
import { nixEnv, run } from '../test/helpers/nix.ts';

const MIB = 1024 * 1024;
const size = Number(process.argv[2] ?? 200) * MIB;
const RSS_LIMIT_MB = 100;

/** Writes `bytes` of pseudo-random data, 1 MiB at a time, and returns its sha256. */
async function writeRandomFile(path: string, bytes: number): Promise<string> {
  const hash = createHash('sha256');
  const file = await open(path, 'w');
  try {
    for (let left = bytes; left > 0; left -= MIB) {
      const chunk = randomFillSync(Buffer.allocUnsafe(Math.min(MIB, left)));
      hash.update(chunk);
      await file.write(chunk);
    }
  } finally {
    await file.close();
  }
  return hash.digest('hex');
}

async function sha256OfFile(path: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

/** Runs a command with stdin from one file and stdout to another; resolves on a zero exit. */
async function runPiped(cmd: string, args: string[], stdin?: string, stdout?: string): Promise<void> {
  const child = spawn(cmd, args, { env: nixEnv(), stdio: ['pipe', 'pipe', 'inherit'] });
  const exited = new Promise<void>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code) => (code === 0 ? resolve() : reject(new Error(`${cmd} exited ${code}`))));
  });
  await Promise.all([
    stdin ? pipeline(createReadStream(stdin), child.stdin) : child.stdin.end(),
    stdout ? pipeline(child.stdout, createWriteStream(stdout)) : child.stdout.resume(),
    exited,
  ]);
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

const mb = (bytes: number) => Math.round((bytes / 1e6) * 10) / 10;
const mibps = (bytes: number, ms: number) => Math.round(bytes / MIB / (ms / 1000));

const dir = await mkdtemp(join(tmpdir(), 'cairn-bench-nar-'));
try {
  const payload = join(dir, 'payload');
  const narFile = join(dir, 'payload.nar');
  console.log(`writing ${size / MIB} MiB of pseudo-random data and its NAR (nix-store --dump) in ${dir}`);
  const payloadSha = await writeRandomFile(payload, size);
  await runPiped('nix-store', ['--dump', payload], undefined, narFile);
  const narSize = (await stat(narFile)).size;
  const narHash = (await run('nix-hash', ['--type', 'sha256', '--base32', payload])).trim();

  // Validation alone, as a server checks an upload while hashing it.
  let t = performance.now();
  const uploadHash = createHash('sha256');
  async function* hashed() {
    for await (const chunk of createReadStream(narFile)) {
      uploadHash.update(chunk as Buffer);
      yield chunk as Buffer;
    }
  }
  for await (const _ of parseNar(hashed())) {
    // drain
  }
  const validateMs = performance.now() - t;
  const validatedHash = encodeNix32(uploadHash.digest());

  globalThis.gc?.();
  await sleep(200);
  const baseline = process.memoryUsage.rss();
  const out = join(dir, 'unpacked');
  t = performance.now();
  const peak = await peakRss(() => unpackNar(createReadStream(narFile), out));
  const unpackMs = performance.now() - t;

  const peerOut = join(dir, 'restored');
  t = performance.now();
  await runPiped('nix-store', ['--restore', peerOut], narFile);
  const peerMs = performance.now() - t;

  const contentsMatch = (await sha256OfFile(out)) === payloadSha;
  const narHashMatch = (await run('nix-hash', ['--type', 'sha256', '--base32', out])).trim() === narHash;
  const figures = {
    bench: 'nar-unpack',
    fileMiB: size / MIB,
    narBytes: narSize,
    baselineRssMB: mb(baseline),
    peakRssMB: mb(peak),
    extraRssMB: mb(peak - baseline),
    unpackMs: Math.round(unpackMs),
    unpackMiBps: mibps(narSize, unpackMs),
    validateMiBps: mibps(narSize, validateMs),
    nixStoreRestoreMiBps: mibps(narSize, peerMs),
    contentsMatch,
    narHashMatch: narHashMatch && validatedHash === narHash,
    extraRssUnderLimit: peak - baseline < RSS_LIMIT_MB * 1e6,
  };
  console.log(`baseline RSS   ${figures.baselineRssMB} MB`);
  console.log(`peak RSS       ${figures.peakRssMB} MB`);
  console.log(`extra RSS      ${figures.extraRssMB} MB (limit ${RSS_LIMIT_MB} MB)`);
  console.log(`unpack         ${figures.unpackMiBps} MiB/s (${figures.unpackMs} ms)`);
  console.log(`validate+hash  ${figures.validateMiBps} MiB/s`);
  console.log(`nix-store --restore (peer) ${figures.nixStoreRestoreMiBps} MiB/s`);
  console.log(
    `result matches ${contentsMatch && figures.narHashMatch} (sha256 of contents, NAR hash ${narHash})`,
  );
  console.log(JSON.stringify(figures));
  if (!figures.extraRssUnderLimit || !contentsMatch || !figures.narHashMatch) process.exitCode = 1;
} finally {
  await rm(dir, { recursive: true, force: true });
}
