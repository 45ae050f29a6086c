import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { PassThrough, type Readable, type Writable } from 'node:stream';
import { CairnError } from '../../lib/cairn-error.ts';
import { parseNar } from '../../nix/nar-parser.ts';
import { encodeNix32 } from '../../nix/nix32.ts';
import type { BlobWriter } from '../blob/blob-store.ts';
import { type NarCompression, spawnDecompressor } from './decompressor.ts';

/** What was measured while a NAR file streamed in. */
export interface ReceivedNar {
  /** `sha256:<nix32>` of the file as uploaded. */
  readonly fileHash: string;
  readonly fileSize: number;
  /** `sha256:<nix32>` of the uncompressed NAR. */
  readonly narHash: string;
  readonly narSize: number;
}

async function writeTo(sink: Writable, chunk: Uint8Array): Promise<void> {
  if (!sink.write(chunk)) await once(sink, 'drain');
}

/**
 * Streams an uploaded NAR file into `writer` while hashing it, decompressing it and checking
 * that what comes out is a well-formed NAR, in one pass and constant memory. Does not commit:
 * the caller decides once it has compared the hashes with what it expects.
 * @throws CairnError TOO_LARGE past `maxBytes`, INVALID_NAR for a malformed archive or bad compressed data.
 */
export async function receiveNar(
  body: AsyncIterable<Uint8Array>,
  writer: BlobWriter,
  options: { compression: NarCompression; maxBytes: number },
): Promise<ReceivedNar> {
  const fileHash = createHash('sha256');
  const narHash = createHash('sha256');
  let fileSize = 0;
  let narSize = 0;
  const child = options.compression === 'none' ? undefined : spawnDecompressor(options.compression);
  const sink: Writable = child ? child.stdin : new PassThrough();
  const narStream: Readable = child ? child.stdout : (sink as PassThrough);
  let stderr = '';
  child?.stderr.on('data', (d: Buffer) => {
    if (stderr.length < 1000) stderr += d.toString();
  });
  const exited = child ? once(child, 'close') : Promise.resolve([0]);
  // A decompressor that dies early closes its stdin: report that as bad data, not EPIPE.
  sink.on('error', () => {});

  async function* measured(): AsyncGenerator<Uint8Array> {
    for await (const chunk of narStream as AsyncIterable<Buffer>) {
      narHash.update(chunk);
      narSize += chunk.length;
      yield chunk;
    }
  }
  const parsing = (async () => {
    for await (const _event of parseNar(measured())) {
      // Validation only: the events themselves are not needed.
    }
  })();
  let parseError: unknown;
  parsing.catch((err: unknown) => {
    parseError = err;
    // Keep draining, so that a writer waiting for 'drain' is not stuck behind the failed parser.
    narStream.resume();
  });

  try {
    for await (const chunk of body) {
      if (parseError !== undefined) break;
      fileSize += chunk.length;
      if (fileSize > options.maxBytes) {
        throw new CairnError(
          'TOO_LARGE',
          `Cannot upload NAR: larger than the limit of ${options.maxBytes} bytes`,
        );
      }
      fileHash.update(chunk);
      await writer.write(chunk);
      await writeTo(sink, chunk);
    }
    sink.end();
    const [code] = (await exited) as [number | null];
    if (parseError === undefined && code !== 0) {
      throw new CairnError(
        'INVALID_NAR',
        `Cannot upload NAR: the file is not valid ${options.compression} data (${stderr.trim().split('\n')[0] ?? `exit ${code}`})`,
      );
    }
    await parsing;
  } catch (err) {
    child?.kill('SIGKILL');
    narStream.resume();
    await writer.abort();
    throw parseError ?? err;
  }
  return {
    fileHash: `sha256:${encodeNix32(fileHash.digest())}`,
    fileSize,
    narHash: `sha256:${encodeNix32(narHash.digest())}`,
    narSize,
  };
}
