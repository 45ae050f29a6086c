import { randomBytes } from 'node:crypto';
import { mkdir, rm, statfs, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { type RunLinesResult, runLines } from '../lib/run-lines.ts';
import type { AgentCache } from '../protocol/agent-protocol.ts';

/** Seconds Nix may take to open a connection to a cache. */
const CONNECT_TIMEOUT_SECONDS = 15;
/** Seconds a download may go without receiving a byte before Nix drops it and retries. */
const STALLED_DOWNLOAD_TIMEOUT_SECONDS = 10;

/** How the agent runs nix: its environment and where it keeps temporary files and GC roots. */
export interface NixContext {
  readonly env: NodeJS.ProcessEnv;
  readonly stateDir: string;
  /** Takes a line of output; `from`, when given, numbers it in a source that survives restarts. */
  readonly onLine: (line: string, from?: { src: string; n: number }) => void;
  /** Aborted when the agent stops: downloads end at once (the journal lets the next run redo them). */
  readonly signal?: AbortSignal;
}

/**
 * The options that add the workspace's caches to the ones the machine trusts (never replacing
 * them), make a path pushed seconds ago visible (no negative narinfo caching), and notice a dead
 * connection in seconds: Nix's defaults wait 300 s for a connection and for a transfer that has
 * stopped moving (a link that went down, a NAT that forgot the flow), after which it retries,
 * resuming the NAR with a range request; the agent retries the whole realise after that.
 */
function cacheOptions(caches: readonly AgentCache[], netrc: string | undefined): string[] {
  const opts = [
    '--option',
    'narinfo-cache-negative-ttl',
    '0',
    '--option',
    'connect-timeout',
    String(CONNECT_TIMEOUT_SECONDS),
    '--option',
    'stalled-download-timeout',
    String(STALLED_DOWNLOAD_TIMEOUT_SECONDS),
  ];
  if (caches.length > 0) {
    opts.push('--option', 'extra-substituters', caches.map((c) => c.url).join(' '));
    opts.push('--option', 'extra-trusted-public-keys', caches.map((c) => c.publicKey).join(' '));
  }
  if (netrc) opts.push('--option', 'netrc-file', netrc);
  return opts;
}

/**
 * Writes a netrc file (mode 0600) giving the agent's token for each private cache's host, runs
 * `fn` with its path, and removes it: the token never appears on a command line.
 */
export async function withNetrc<T>(
  ctx: NixContext,
  caches: readonly AgentCache[],
  token: string,
  fn: (netrc: string | undefined) => Promise<T>,
): Promise<T> {
  const hosts = [...new Set(caches.filter((c) => c.private).map((c) => new URL(c.url).hostname))];
  if (hosts.length === 0) return await fn(undefined);
  const dir = join(ctx.stateDir, 'tmp');
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const file = join(dir, `netrc-${randomBytes(6).toString('hex')}`);
  await writeFile(file, hosts.map((h) => `machine ${h}\nlogin cairn\npassword ${token}\n`).join(''), {
    mode: 0o600,
  });
  try {
    return await fn(file);
  } finally {
    await rm(file, { force: true });
  }
}

/** What `nix-store --realise --dry-run` says will be downloaded, in bytes (unpacked), if it says. */
export async function plannedUnpackedBytes(
  ctx: NixContext,
  paths: readonly string[],
  caches: readonly AgentCache[],
  netrc: string | undefined,
): Promise<number | undefined> {
  const r = await dryRunRealise(ctx, paths, caches, netrc);
  return r.code === 0 ? r.unpackedBytes : undefined;
}

/** What `nix-store --realise --dry-run` lists: paths it would fetch, and paths no cache has. */
export interface DryRunLists {
  readonly fetch: string[];
  readonly unavailable: string[];
  /** The unpacked size Nix announces for the fetch, rounded to its 0.01 MiB (undefined: it said none). */
  readonly unpackedBytes: number | undefined;
  readonly code: number | null;
  readonly tail: readonly string[];
}

/**
 * The paths realising `paths` would download, as Nix itself decides against the local store and
 * the caches (`nix-store --realise --dry-run`, the same in Nix 2.8 and current Nix): the store
 * paths listed under "will be fetched", and under "will be built" or "don't know how to build"
 * (no cache has them).
 */
export async function dryRunRealise(
  ctx: Pick<NixContext, 'env' | 'signal'>,
  paths: readonly string[],
  caches: readonly AgentCache[],
  netrc: string | undefined,
): Promise<DryRunLists> {
  const fetch: string[] = [];
  const unavailable: string[] = [];
  let list: string[] | undefined;
  let unpackedBytes: number | undefined;
  const r = await runLines(
    'nix-store',
    ['--realise', '--dry-run', ...cacheOptions(caches, netrc), ...paths],
    {
      env: ctx.env,
      ...(ctx.signal ? { signal: ctx.signal } : {}),
      onLine: (line) => {
        const size = /\(([\d.]+) MiB download, ([\d.]+) MiB unpacked\)/.exec(line);
        if (size) unpackedBytes = (unpackedBytes ?? 0) + Number(size[2]) * 1024 * 1024;
        if (/will be fetched/.test(line)) list = fetch;
        else if (/will be built|don't know how to build/.test(line)) list = unavailable;
        else {
          const m = /^\s+(\/\S+)$/.exec(line);
          if (m && list) list.push(m[1]!);
          else list = undefined;
        }
      },
    },
  );
  return { fetch, unavailable, unpackedBytes, code: r.code, tail: r.tail };
}

/** Free bytes on the file system holding the Nix store. */
export async function freeStoreBytes(): Promise<number> {
  const s = await statfs('/nix/store');
  return s.bavail * s.bsize;
}

/**
 * Realises store paths from the caches, rooted under the agent's state dir while in use
 * (a garbage collection must not take them between download and switch).
 */
export async function realise(
  ctx: NixContext,
  paths: readonly string[],
  caches: readonly AgentCache[],
  netrc: string | undefined,
  rootName = 'in-flight',
): Promise<RunLinesResult> {
  const roots = join(ctx.stateDir, 'gcroots');
  await mkdir(roots, { recursive: true });
  return await runLines(
    'nix-store',
    ['--realise', ...cacheOptions(caches, netrc), '--add-root', join(roots, rootName), ...paths],
    { env: ctx.env, onLine: ctx.onLine, ...(ctx.signal ? { signal: ctx.signal } : {}) },
  );
}

/** Removes the in-flight GC roots once a deployment is over (the profile roots what stays). */
export async function dropInFlightRoots(ctx: NixContext): Promise<void> {
  const roots = join(ctx.stateDir, 'gcroots');
  for (const name of ['in-flight', 'in-flight-2', 'in-flight-3'])
    await rm(join(roots, name), { force: true });
}

/** Points the profile at a store path, as a new generation. */
export async function setProfile(
  ctx: NixContext,
  profile: string,
  storePath: string,
): Promise<RunLinesResult> {
  ctx.onLine(`$ nix-env --profile ${profile} --set ${storePath}`);
  return await runLines('nix-env', ['--profile', profile, '--set', storePath], {
    env: ctx.env,
    onLine: ctx.onLine,
  });
}
