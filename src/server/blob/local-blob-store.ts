import { randomBytes } from 'node:crypto';
import { type FileHandle, mkdir, open, readdir, rename, rm, stat } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { Readable, type Writable } from 'node:stream';
import type { BlobRead, BlobStore, BlobWriter } from './blob-store.ts';
import { checkBlobKey } from './check-blob-key.ts';

/**
 * A {@link BlobStore} in a local directory. Writes go to `.tmp/` and are fsynced, then
 * renamed into place, so a crash at any point leaves either the old blob or the new one.
 */
export class LocalBlobStore implements BlobStore {
  readonly #root: string;
  readonly #tmp: string;

  constructor(root: string) {
    this.#root = root;
    this.#tmp = join(root, '.tmp');
  }

  /** Creates the directories and removes temporary files left by a crash. */
  async init(): Promise<void> {
    await mkdir(this.#tmp, { recursive: true });
    for (const name of await readdir(this.#tmp)) await rm(join(this.#tmp, name), { force: true });
  }

  #path(key: string): string {
    return join(this.#root, checkBlobKey(key));
  }

  async createWriter(key: string): Promise<BlobWriter> {
    const target = this.#path(key);
    const tmp = join(this.#tmp, `${randomBytes(8).toString('hex')}.part`);
    const handle = await open(tmp, 'wx', 0o644);
    let closed = false;
    const close = async () => {
      if (!closed) {
        closed = true;
        await handle.close();
      }
    };
    return {
      write: async (chunk) => {
        let off = 0;
        while (off < chunk.length) off += (await handle.write(chunk, off)).bytesWritten;
      },
      commit: async () => {
        await handle.sync();
        await close();
        await mkdir(dirname(target), { recursive: true });
        await rename(tmp, target);
      },
      abort: async () => {
        await close().catch(() => {});
        await rm(tmp, { force: true });
      },
    };
  }

  async stat(key: string): Promise<{ size: number } | undefined> {
    try {
      const s = await stat(this.#path(key));
      return s.isFile() ? { size: s.size } : undefined;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw err;
    }
  }

  async read(key: string, range?: { start: number; end: number }): Promise<BlobRead | undefined> {
    const path = this.#path(key);
    let handle: FileHandle;
    try {
      handle = await open(path, 'r');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw err;
    }
    try {
      const { size } = await handle.stat();
      const start = range?.start ?? 0;
      const end = range?.end ?? size - 1;
      if (end < start) {
        // An empty file: a read stream cannot be asked for zero bytes.
        await handle.close();
        return { size: 0, stream: Readable.from([]) };
      }
      // The stream owns the handle and closes it once: closing its fd number by hand as well
      // could close a file another request opened in the meantime under the same number.
      // 256 KiB reads: large enough to keep a fast socket busy, small enough to stay cheap.
      let stream: Readable | undefined;
      return {
        size: end - start + 1,
        get stream() {
          stream ??= handle.createReadStream({ start, end, highWaterMark: 256 * 1024, autoClose: true });
          return stream;
        },
        writeTo: async (sink: Writable) => {
          try {
            await copyRange(handle, start, end, sink);
          } finally {
            await handle.close().catch(() => {});
          }
        },
      };
    } catch (err) {
      await handle.close().catch(() => {});
      throw err;
    }
  }

  async delete(key: string): Promise<void> {
    await rm(this.#path(key), { force: true });
  }
}

/** Size of each of the two buffers a NAR is sent through. */
const COPY_CHUNK = 1024 * 1024;

/**
 * Copies `[start, end]` of a file to `sink` through two buffers allocated once: one is read
 * into while the other is being written. A stream would allocate a fresh buffer per chunk,
 * and that allocation (page faults, zeroing, GC) costs more than the copies themselves.
 * A buffer is reused only after the sink's callback said it was written.
 */
async function copyRange(
  handle: import('node:fs/promises').FileHandle,
  start: number,
  end: number,
  sink: Writable,
): Promise<void> {
  const buffers = [Buffer.allocUnsafeSlow(COPY_CHUNK), Buffer.allocUnsafeSlow(COPY_CHUNK)];
  const written: (Promise<void> | undefined)[] = [undefined, undefined];
  let gone: Error | undefined;
  const onClose = () => {
    gone ??= new Error('Cannot send the file: the client went away');
  };
  sink.once('close', onClose);
  try {
    let pos = start;
    for (let i = 0; pos <= end; i ^= 1) {
      await written[i];
      if (gone) throw gone;
      const buf = buffers[i]!;
      const { bytesRead } = await handle.read(buf, 0, Math.min(COPY_CHUNK, end - pos + 1), pos);
      if (bytesRead === 0) throw new Error('Cannot send the file: it is shorter than its size');
      pos += bytesRead;
      const write = new Promise<void>((resolve, reject) => {
        sink.write(buf.subarray(0, bytesRead), (err) => (err ? reject(err) : resolve()));
      });
      // When the client goes away both writes fail, and only one is awaited before the throw:
      // an unobserved rejection would take the whole server down. The awaits still see it.
      write.catch(() => {});
      written[i] = write;
    }
    await Promise.all(written);
    await new Promise<void>((resolve) => sink.end(resolve));
  } finally {
    sink.off('close', onClose);
  }
}
