import { createHash } from 'node:crypto';
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { RawBuilder } from 'kysely';
import { encodeNarString } from '../../src/nix/nar-format.ts';
import { encodeNix32 } from '../../src/nix/nix32.ts';
import { type DatabaseConfig, openDatabase } from '../../src/server/db/open-database.ts';
import { nixEnv } from './nix.ts';
import { cli, type TestServer } from './server.ts';

/** A cache created for a test, with a push token and a pull-only token for it. */
export interface TestCache {
  readonly name: string;
  /** `http://127.0.0.1:PORT/cache/NAME`. */
  readonly url: string;
  /** `NAME-1:base64`, as `cairn cache create` printed it. */
  readonly publicKey: string;
  readonly pushToken: string;
  readonly pullToken: string;
}

/** Creates a cache through the CLI, and a push and a pull token scoped to it. */
export async function createTestCache(
  server: Pick<TestServer, 'url' | 'adminToken'>,
  name: string,
  options: { public?: boolean } = {},
): Promise<TestCache> {
  const env = { CAIRN_SERVER: server.url, CAIRN_TOKEN: server.adminToken };
  const ok = (r: { code: number; stdout: string; stderr: string }) => {
    if (r.code !== 0) throw new Error(`cairn failed: ${r.stderr}`);
    return r.stdout.trim();
  };
  const publicKey = ok(await cli(['cache', 'create', name, ...(options.public ? ['--public'] : [])], env));
  const pushToken = ok(
    await cli(['token', 'create', '--scope', `cache:${name}:push`, '--name', `${name}-push`], env),
  );
  const pullToken = ok(
    await cli(['token', 'create', '--scope', `cache:${name}:pull`, '--name', `${name}-pull`], env),
  );
  return { name, url: `${server.url}/cache/${name}`, publicKey, pushToken, pullToken };
}

/** A scratch directory for one test, removed by `cleanup`. */
export interface Scratch {
  readonly dir: string;
  cleanup(): Promise<void>;
}

/** Makes a scratch directory. */
export async function scratchDir(prefix = 'cairn-test-'): Promise<Scratch> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  return { dir, cleanup: () => rm(dir, { recursive: true, force: true }) };
}

/** Writes a netrc file giving `token` as the password for 127.0.0.1, as Nix reads it. */
export async function writeNetrc(dir: string, token: string, name = 'netrc'): Promise<string> {
  const file = join(dir, name);
  await writeFile(file, `machine 127.0.0.1\nlogin cairn\npassword ${token}\n`, { mode: 0o600 });
  return file;
}

/**
 * The environment of a Nix client on "another machine": its own narinfo disk cache
 * (`XDG_CACHE_HOME`), so that it does not remember what this machine uploaded.
 */
export function otherMachineNixEnv(cacheHome: string): NodeJS.ProcessEnv {
  return nixEnv({ XDG_CACHE_HOME: cacheHome });
}

/** Nix options that make `cache` the only substituter, trusted by its key, with no stale negative lookups. */
export function substituterArgs(cache: TestCache, netrc?: string): string[] {
  return [
    '--option',
    'substituters',
    cache.url,
    '--option',
    'trusted-public-keys',
    cache.publicKey,
    '--option',
    'narinfo-cache-negative-ttl',
    '0',
    ...(netrc ? ['--option', 'netrc-file', netrc] : []),
  ];
}

/** Every file under `root`, as paths relative to it, sorted; [] when `root` does not exist. */
export async function listFiles(root: string): Promise<string[]> {
  let entries: import('node:fs').Dirent[];
  try {
    entries = await readdir(root, { withFileTypes: true, recursive: true });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
  return entries
    .filter((e) => e.isFile())
    .map((e) => join(e.parentPath ?? e.path, e.name).slice(root.length + 1))
    .sort();
}

/** Runs one query on a database, whichever backend it is (for servers run as child processes). */
export async function queryDatabase<T>(database: DatabaseConfig, query: RawBuilder<T>): Promise<T[]> {
  const { db } = openDatabase(database);
  try {
    return [...(await query.execute(db)).rows];
  } finally {
    await db.destroy();
  }
}

/** An HTTP answer with its body as text. */
export interface RawResponse {
  readonly status: number;
  readonly headers: import('node:http').IncomingHttpHeaders;
  /** The body decoded as UTF-8. */
  readonly body: string;
  /** The body as received. */
  readonly bytes: Buffer;
}

/**
 * Sends one request with node:http, exactly as given: the path is not normalised (so `..`
 * reaches the server as sent), and the body may be a Buffer or a string.
 */
export async function rawRequest(
  url: string,
  options: {
    method?: string;
    path?: string;
    headers?: Record<string, string | number>;
    body?: Buffer | string;
  } = {},
): Promise<RawResponse> {
  const target = new URL(url);
  return await new Promise((resolve, reject) => {
    const req = request(
      {
        host: target.hostname,
        port: target.port,
        method: options.method ?? 'GET',
        path: options.path ?? `${target.pathname}${target.search}`,
        headers: options.headers ?? {},
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (d: Buffer) => chunks.push(d));
        res.on('end', () => {
          const bytes = Buffer.concat(chunks);
          resolve({ status: res.statusCode ?? 0, headers: res.headers, body: bytes.toString('utf8'), bytes });
        });
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(options.body);
  });
}

/** A Bearer authorization header. */
export function bearer(token: string): Record<string, string> {
  return { Authorization: `Bearer ${token}` };
}

/** `sha256:<nix32>` of some bytes. */
export function nixSha256(data: Uint8Array): string {
  return `sha256:${encodeNix32(createHash('sha256').update(data).digest())}`;
}

/** The NAR of a single regular file with these contents, built in memory. */
export function narOfFile(contents: Buffer): Buffer {
  return Buffer.concat(
    ['nix-archive-1', '(', 'type', 'regular', 'contents']
      .map((s) => encodeNarString(s))
      .concat([encodeNarString(contents), encodeNarString(')')]),
  );
}

/** A random, well-formed store path hash part (32 nix32 characters). */
export function randomHashPart(): string {
  return encodeNix32(createHash('sha256').update(String(Math.random())).digest()).slice(0, 32);
}

/** A synthetic store path to upload by hand: its uncompressed NAR and the narinfo describing it. */
export interface SyntheticPath {
  readonly hashPart: string;
  readonly storePath: string;
  readonly nar: Buffer;
  /** `<nix32 sha256 of nar>.nar`. */
  readonly narFile: string;
  /** Narinfo lines for an uncompressed upload; override or drop lines with {@link narinfoText}. */
  readonly fields: Readonly<Record<string, string>>;
}

/** Makes a synthetic store path whose NAR holds one file with `contents`, referencing `references`. */
export function syntheticPath(
  name: string,
  contents: string,
  references: readonly string[] = [],
): SyntheticPath {
  const hashPart = randomHashPart();
  const storePath = `/nix/store/${hashPart}-${name}`;
  const nar = narOfFile(Buffer.from(contents));
  const narHash = nixSha256(nar);
  const narFile = `${narHash.slice('sha256:'.length)}.nar`;
  return {
    hashPart,
    storePath,
    nar,
    narFile,
    fields: {
      StorePath: storePath,
      URL: `nar/${narFile}`,
      Compression: 'none',
      FileHash: narHash,
      FileSize: String(nar.length),
      NarHash: narHash,
      NarSize: String(nar.length),
      References: references.join(' '),
    },
  };
}

/** Renders narinfo fields, with some replaced (a string) or removed (undefined). */
export function narinfoText(
  fields: Readonly<Record<string, string>>,
  changes: Readonly<Record<string, string | undefined>> = {},
): string {
  const merged: Record<string, string | undefined> = { ...fields, ...changes };
  return Object.entries(merged)
    .filter((e): e is [string, string] => e[1] !== undefined)
    .map(([k, v]) => `${k}: ${v}\n`)
    .join('');
}
