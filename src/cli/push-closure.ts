import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { CairnError } from '../lib/cairn-error.ts';
import { runProcess } from '../lib/run-process.ts';
import { type NarInfo, serializeNarInfo } from '../nix/narinfo.ts';
import { encodeNix32 } from '../nix/nix32.ts';
import { type LocalPathInfo, parsePathInfoJson } from '../nix/path-info-json.ts';
import { parseStorePath } from '../nix/store-path.ts';
import { missingPathsSchema } from '../protocol/api-schemas.ts';
import type { ApiClient } from './api-client.ts';
import { httpPut } from './http-put.ts';

/** Compressions `cairn push` can upload with. */
export type PushCompression = 'none' | 'xz' | 'zstd';

/** Progress of a push, reported after every path. */
export interface PushProgress {
  readonly total: number;
  readonly done: number;
  readonly bytes: number;
  readonly current: string | undefined;
}

/** Options of {@link pushClosure}. */
export interface PushOptions {
  readonly compression: PushCompression;
  readonly jobs: number;
  readonly env: NodeJS.ProcessEnv;
  readonly onProgress?: (p: PushProgress) => void;
}

/** What a push did. */
export interface PushResult {
  readonly closure: number;
  readonly uploaded: number;
  readonly skipped: number;
  readonly bytes: number;
}

/**
 * Pushes the closures of `paths` to a cache: asks the server in one request which paths it
 * lacks, then uploads those, several at a time, each only after its references, since the
 * cache refuses a narinfo whose references it does not hold.
 */
export async function pushClosure(
  client: ApiClient,
  target: { cache: string; paths: readonly string[] },
  options: PushOptions,
): Promise<PushResult> {
  for (const p of target.paths) parseStorePath(p);
  const infos = parsePathInfoJson(
    await runProcess(
      'nix',
      ['--extra-experimental-features', 'nix-command', 'path-info', '--json', '--recursive', ...target.paths],
      { env: options.env },
    ),
  );
  const byPath = new Map(infos.map((i) => [i.path, i]));
  const { missing } = await client.request(
    'POST',
    `caches/${encodeURIComponent(target.cache)}/missing`,
    missingPathsSchema,
    {
      paths: [...byPath.keys()],
    },
  );
  const pending = new Set(missing);
  const todo = missing.map((p) => byPath.get(p)!).filter(Boolean);
  let done = 0;
  let bytes = 0;
  const cacheUrl = `${client.server}/cache/${encodeURIComponent(target.cache)}`;
  const ready = () => todo.findIndex((i) => i.references.every((r) => r === i.path || !pending.has(r)));
  const report = (current: string | undefined) =>
    options.onProgress?.({ total: todo.length + done, done, bytes, current });

  let failure: unknown;
  const inFlight = new Set<Promise<void>>();
  while ((todo.length > 0 || inFlight.size > 0) && failure === undefined) {
    const idx = inFlight.size < options.jobs ? ready() : -1;
    if (idx >= 0) {
      const info = todo.splice(idx, 1)[0]!;
      report(info.path);
      const job = uploadPath(info, cacheUrl, client.authorization, options)
        .then((size) => {
          pending.delete(info.path);
          done++;
          bytes += size;
          report(undefined);
        })
        .catch((err: unknown) => {
          failure ??= err;
        })
        .finally(() => inFlight.delete(job));
      inFlight.add(job);
      continue;
    }
    if (inFlight.size === 0) {
      throw new CairnError(
        'INTERNAL',
        `Cannot push: the references of ${todo.length} path(s) cannot be ordered`,
      );
    }
    await Promise.race(inFlight);
  }
  await Promise.allSettled(inFlight);
  if (failure !== undefined) throw failure;
  return { closure: byPath.size, uploaded: done, skipped: byPath.size - done, bytes };
}

/** Uploads one path's NAR file and then its narinfo; resolves to the bytes sent. */
async function uploadPath(
  info: LocalPathInfo,
  cacheUrl: string,
  authorization: string | undefined,
  options: PushOptions,
): Promise<number> {
  const base = (p: string) => p.slice('/nix/store/'.length);
  const nar = await prepareNar(info, options);
  try {
    const url = `nar/${nar.fileName}`;
    await httpPut(
      `${cacheUrl}/${url}`,
      { stream: nar.open(), length: nar.fileSize },
      {
        authorization,
        contentType: 'application/x-nix-nar',
      },
    );
    const narinfo: NarInfo = {
      storePath: info.path,
      url,
      compression: options.compression,
      fileHash: { algorithm: 'sha256', digest: nar.fileHash },
      fileSize: nar.fileSize,
      narHash: info.narHash,
      narSize: info.narSize,
      references: info.references.map(base).sort(),
      ...(info.deriver ? { deriver: base(info.deriver) } : {}),
      sigs: [...info.signatures],
      ...(info.ca ? { ca: info.ca } : {}),
      unknownFields: [],
    };
    await httpPut(`${cacheUrl}/${info.path.slice(11, 43)}.narinfo`, serializeNarInfo(narinfo), {
      authorization,
      contentType: 'text/x-nix-narinfo',
    });
    return nar.fileSize;
  } finally {
    await nar.cleanup();
  }
}

interface PreparedNar {
  readonly fileName: string;
  readonly fileHash: Uint8Array;
  readonly fileSize: number;
  open(): NodeJS.ReadableStream & import('node:stream').Readable;
  cleanup(): Promise<void>;
}

const EXTENSIONS: Record<PushCompression, string> = { none: '.nar', xz: '.nar.xz', zstd: '.nar.zst' };

/**
 * Makes the NAR file to upload. Uncompressed, it is `nix-store --dump` streamed as it comes
 * (its hash is the NAR hash Nix already knows); compressed, it goes through a temporary file,
 * because the file's name must carry its hash before the upload starts.
 */
async function prepareNar(info: LocalPathInfo, options: PushOptions): Promise<PreparedNar> {
  const dump = () => {
    const child = spawn('nix-store', ['--dump', info.path], {
      env: options.env,
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    return child;
  };
  if (options.compression === 'none') {
    if (info.narHash.algorithm !== 'sha256')
      throw new CairnError('INVALID_HASH', `Cannot push ${info.path}: NAR hash is not sha256`);
    return {
      fileName: `${encodeNix32(info.narHash.digest)}.nar`,
      fileHash: info.narHash.digest,
      fileSize: info.narSize,
      open: () => {
        const out = new PassThrough();
        const child = dump();
        child.stdout.pipe(out);
        // An upload refused or cut before the end leaves nix-store blocked on a full pipe.
        out.on('close', () => {
          if (child.exitCode === null) child.kill();
        });
        child.on('close', (code) => {
          if (code !== 0)
            out.destroy(
              new CairnError('COMMAND_FAILED', `Cannot dump ${info.path}: nix-store exited ${code}`),
            );
        });
        return out;
      },
      cleanup: async () => {},
    };
  }
  const tmp = join(
    tmpdir(),
    `cairn-push-${randomBytes(6).toString('hex')}${EXTENSIONS[options.compression]}`,
  );
  const hash = createHash('sha256');
  const child = dump();
  const [cmd, args] = options.compression === 'xz' ? ['xz', ['-c', '-T0']] : ['zstd', ['-q', '-c', '-T0']];
  const compressor = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'inherit'] });
  child.stdout.pipe(compressor.stdin);
  const hashing = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      hash.update(chunk);
      cb(null, chunk);
    },
  });
  const dumped = new Promise<number | null>((resolve) => child.on('close', resolve));
  try {
    await pipeline(compressor.stdout, hashing, createWriteStream(tmp));
    const code = await dumped;
    if (code !== 0)
      throw new CairnError('COMMAND_FAILED', `Cannot dump ${info.path}: nix-store exited ${code}`);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
  const digest = hash.digest();
  const { size } = await stat(tmp);
  return {
    fileName: `${encodeNix32(digest)}${EXTENSIONS[options.compression]}`,
    fileHash: digest,
    fileSize: size,
    open: () => createReadStream(tmp),
    cleanup: () => rm(tmp, { force: true }),
  };
}
