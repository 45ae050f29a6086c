import { randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, open, readdir, rename, rm, stat } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { CairnError } from '../../lib/cairn-error.ts';
import type { BlobRead, BlobStore, BlobWriter } from './blob-store.ts';

const KEY_PATTERN = /^(?:[A-Za-z0-9][A-Za-z0-9._+=-]*\/)*[A-Za-z0-9][A-Za-z0-9._+=-]*$/;

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
    if (!KEY_PATTERN.test(key) || key.split('/').some((s) => s === '.' || s === '..')) {
      throw new CairnError('INVALID_ARGUMENT', `Cannot use blob key: unsafe characters or segments (${key})`);
    }
    return join(this.#root, key);
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
    let handle: import('node:fs/promises').FileHandle;
    try {
      handle = await open(path, 'r');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw err;
    }
    const { size } = await handle.stat();
    const start = range?.start ?? 0;
    const end = range?.end ?? size - 1;
    // 256 KiB reads: large enough to keep a fast socket busy, small enough to stay cheap.
    const stream = createReadStream('', {
      fd: handle.fd,
      start,
      end,
      highWaterMark: 256 * 1024,
      autoClose: true,
    });
    stream.on('close', () => void handle.close().catch(() => {}));
    return { size: Math.max(0, end - start + 1), stream };
  }

  async delete(key: string): Promise<void> {
    await rm(this.#path(key), { force: true });
  }
}
