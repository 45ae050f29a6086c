import { type FileHandle, lstat, mkdir, mkdtemp, open, rename, rm, symlink } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { CairnError } from '../lib/cairn-error.ts';
import type { NarSource } from './nar-format.ts';
import { type NarEvent, type ParseNarOptions, parseNar } from './nar-parser.ts';

/** Options of {@link unpackNar}. */
export interface UnpackNarOptions extends ParseNarOptions {
  /** Stops the unpack; the partial output is removed and the signal's reason thrown. */
  readonly signal?: AbortSignal;
}

const SLASH = Buffer.from('/');

/**
 * Unpacks a NAR stream into `target`, which must not exist, as `nix-store --restore` does.
 *
 * Atomic: the tree is built in a hidden sibling directory and renamed to `target` only once
 * the whole archive has been read and validated; on any error the partial tree is removed and
 * nothing appears at `target`. Memory stays constant whatever the file sizes.
 *
 * Modes are those of `nix-store --restore`, not the read-only ones of the store: files 0666,
 * executables and directories 0777, less the umask. The output is meant to be used, moved or
 * deleted by its owner; making it read-only is the store's business, as it is for Nix.
 *
 * Every file, directory and symlink is created exclusively (O_EXCL, mkdir, symlink all fail on
 * an existing name), so a symlink from the archive is never followed while writing, even on a
 * case-insensitive file system where `A` and `a` collide. Symlinks are created as they are:
 * absolute targets and targets leaving the tree are legitimate in store paths.
 * @throws CairnError INVALID_NAR on a malformed or hostile archive; INVALID_ARGUMENT when
 *   `target` exists. File system errors (no space, permissions) are thrown as they are.
 */
export async function unpackNar(
  source: NarSource,
  target: string,
  options: UnpackNarOptions = {},
): Promise<void> {
  const { signal, ...limits } = options;
  signal?.throwIfAborted();
  if (await exists(target)) {
    throw new CairnError('INVALID_ARGUMENT', `Cannot unpack NAR: target already exists (${target})`);
  }
  // A sibling, so the final rename stays within one file system and is atomic.
  const temp = await mkdtemp(join(dirname(target), `.${basename(target)}.cairn-unpack-`));
  const root = Buffer.from(join(temp, 'nar'));
  const writer = new TreeWriter(root);
  try {
    for await (const event of parseNar(source, limits)) {
      signal?.throwIfAborted();
      await writer.apply(event);
    }
    await writer.close();
    signal?.throwIfAborted();
    // rename replaces an existing file or empty directory, so check again just before it.
    if (await exists(target)) {
      throw new CairnError('INVALID_ARGUMENT', `Cannot unpack NAR: target already exists (${target})`);
    }
    await rename(root, target);
  } catch (err) {
    await writer.close().catch(() => {}); // the first error is the one worth reporting
    throw err;
  } finally {
    // On success only the empty temp directory is left; on failure, the partial tree too.
    await rm(temp, { recursive: true, force: true });
  }
}

/**
 * Contents are gathered up to this many bytes and written with one writev: one write per
 * 64 KiB stream chunk costs a thread-pool round trip each and runs at a third of the speed.
 */
const WRITE_BATCH = 1024 * 1024;

/** Creates the nodes of a NAR under `root` as the parser's events arrive. */
class TreeWriter {
  readonly #root: Buffer;
  #file: FileHandle | undefined;
  #left = 0; // bytes of the current file not yet received
  #pending: Buffer[] = [];
  #pendingBytes = 0;
  #writing: Promise<void> | undefined;

  constructor(root: Buffer) {
    this.#root = root;
  }

  async apply(event: NarEvent): Promise<void> {
    switch (event.type) {
      case 'directory':
        await mkdir(this.#pathOf(event.path), 0o777);
        break;
      case 'symlink':
        await symlink(event.target, this.#pathOf(event.path));
        break;
      case 'regular':
        // 'wx' is O_CREAT | O_EXCL: it fails on any existing name, dangling symlinks included.
        this.#file = await open(this.#pathOf(event.path), 'wx', event.executable ? 0o777 : 0o666);
        this.#left = event.size;
        if (this.#left === 0) await this.close();
        break;
      case 'contents':
        // The chunk is a view of the input, never reused by the parser, so it can wait in the batch.
        this.#pending.push(event.chunk);
        this.#pendingBytes += event.chunk.length;
        this.#left -= event.chunk.length;
        if (this.#left === 0) await this.close();
        else if (this.#pendingBytes >= WRITE_BATCH) await this.#flush();
        break;
    }
  }

  /** Writes what is pending and closes the file being written, if any. */
  async close(): Promise<void> {
    const file = this.#file;
    if (file === undefined) return;
    try {
      await this.#flush();
    } finally {
      this.#file = undefined;
      const writing = this.#writing;
      this.#writing = undefined;
      try {
        await writing;
      } finally {
        await file.close();
      }
    }
  }

  /**
   * Starts writing the batch while the parser reads on, after the previous batch is written:
   * one write in flight overlaps reading with writing and keeps memory at two batches.
   */
  async #flush(): Promise<void> {
    const chunks = this.#pending;
    this.#pending = [];
    this.#pendingBytes = 0;
    await this.#writing;
    const writing = writeAll(this.#file!, chunks);
    writing.catch(() => {}); // awaited by the next flush or close; this only marks it handled
    this.#writing = writing;
  }

  // Buffer paths keep names that are not UTF-8 byte for byte.
  #pathOf(path: readonly Buffer[]): Buffer {
    return Buffer.concat([this.#root, ...path.flatMap((name) => [SLASH, name])]);
  }
}

/** Writes all of `chunks`; writev may write less than asked, so go on with the rest. */
async function writeAll(file: FileHandle, chunks: Buffer[]): Promise<void> {
  while (chunks.length > 0) {
    let { bytesWritten } = await file.writev(chunks);
    let i = 0;
    while (i < chunks.length && bytesWritten >= chunks[i]!.length) bytesWritten -= chunks[i++]!.length;
    chunks = i < chunks.length ? [chunks[i]!.subarray(bytesWritten), ...chunks.slice(i + 1)] : [];
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await lstat(path);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw err;
  }
}
