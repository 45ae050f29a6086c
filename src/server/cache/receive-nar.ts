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

/**
 * How far a compressed NAR may expand: to at most this many times the bytes received so far,
 * plus {@link EXPANSION_SLACK_BYTES}. Real NARs compress 3 to 20 times with xz or zstd; a
 * compression bomb (145 KB of zstd for 4 GiB of zeros) is stopped after a fraction of a second
 * of work instead of being decompressed and parsed whole. The narinfo (and its NarSize) comes
 * after the NAR file, so it cannot bound this.
 */
export const MAX_EXPANSION_RATIO = 1000;
/** Decompressed bytes allowed beyond {@link MAX_EXPANSION_RATIO}, for tiny, very regular NARs. */
export const EXPANSION_SLACK_BYTES = 64 * 1024 * 1024;

/**
 * Writes a chunk, waiting for 'drain' when the sink is full. Rejects when the sink closes
 * instead (the decompressor exited, or the parser gave up and destroyed the stream), which
 * would otherwise leave the wait for 'drain' hanging forever.
 */
async function writeTo(sink: Writable, chunk: Uint8Array): Promise<void> {
  if (sink.destroyed) throw new Error('the stream is closed');
  if (sink.write(chunk)) return;
  await new Promise<void>((resolve, reject) => {
    const settle = (err?: Error) => {
      sink.off('drain', onDrain);
      sink.off('close', onClose);
      if (err) reject(err);
      else resolve();
    };
    const onDrain = () => settle();
    const onClose = () => settle(new Error('the stream closed'));
    sink.on('drain', onDrain);
    sink.on('close', onClose);
  });
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

  // Set when the decompressed NAR grew past what its file may expand to: the decompressor is
  // killed at once, so a compression bomb costs no more than that much work.
  let bomb: CairnError | undefined;
  async function* measured(): AsyncGenerator<Uint8Array> {
    for await (const chunk of narStream as AsyncIterable<Buffer>) {
      narHash.update(chunk);
      narSize += chunk.length;
      const limit = Math.min(options.maxBytes, fileSize * MAX_EXPANSION_RATIO + EXPANSION_SLACK_BYTES);
      if (child && narSize > limit) {
        bomb = new CairnError(
          'TOO_LARGE',
          `Cannot upload NAR: it decompresses to more than ${limit} bytes from ${fileSize} (more than ${MAX_EXPANSION_RATIO} times its size, or past the limit of ${options.maxBytes})`,
        );
        child.kill('SIGKILL');
        throw bomb;
      }
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

  // Why the upload was not read to its end: the parser found the archive bad, or the sink
  // stopped taking data (the decompressor exited, or the parser gave up). Each names the fault.
  let stopped: 'parser' | 'sink' | undefined;
  try {
    for await (const chunk of body) {
      if (parseError !== undefined) {
        stopped = 'parser';
        break;
      }
      fileSize += chunk.length;
      if (fileSize > options.maxBytes) {
        throw new CairnError(
          'TOO_LARGE',
          `Cannot upload NAR: larger than the limit of ${options.maxBytes} bytes`,
        );
      }
      fileHash.update(chunk);
      await writer.write(chunk);
      try {
        await writeTo(sink, chunk);
      } catch {
        stopped = 'sink';
        break;
      }
    }
    sink.end();
    const [code] = (await exited) as [number | null];
    if (bomb) throw bomb;
    // Bad compressed data also makes the NAR look truncated: name the cause, not the symptom.
    if (stopped !== 'parser' && code !== 0) {
      throw new CairnError(
        'INVALID_NAR',
        `Cannot upload NAR: the file is not valid ${options.compression} data (${stderr.trim().split('\n')[0] || `exit ${code}`})`,
      );
    }
    await parsing;
    // bzip2 only warns of data after its stream, and exits 0.
    if (stopped === 'sink' || (code === 0 && /trailing garbage/.test(stderr))) {
      throw new CairnError(
        'INVALID_NAR',
        `Cannot upload NAR: the file has data after the end of its ${options.compression} stream`,
      );
    }
  } catch (err) {
    child?.kill('SIGKILL');
    narStream.resume();
    await writer.abort();
    throw err;
  }
  return {
    fileHash: `sha256:${encodeNix32(fileHash.digest())}`,
    fileSize,
    narHash: `sha256:${encodeNix32(narHash.digest())}`,
    narSize,
  };
}
