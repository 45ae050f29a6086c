import { constants, lstat, open, readdir, readlink } from 'node:fs/promises';
import { CairnError } from '../lib/cairn-error.ts';
import { encodeNarString, NAR_MAGIC, narPadding } from './nar-format.ts';

/** Size of the chunks this yields, and of each read of file contents. */
const CHUNK_SIZE = 256 * 1024;
/** Reads at least this big are yielded on their own instead of being gathered. */
const DIRECT_SIZE = 64 * 1024;
const SLASH = Buffer.from('/');
const ZEROS = Buffer.alloc(8);

const token = (s: string) => encodeNarString(s);
const T = {
  magic: token(NAR_MAGIC),
  open: token('('),
  close: token(')'),
  type: token('type'),
  regular: token('regular'),
  executable: token('executable'),
  empty: token(''),
  contents: token('contents'),
  symlink: token('symlink'),
  target: token('target'),
  directory: token('directory'),
  entry: token('entry'),
  name: token('name'),
  node: token('node'),
};

/**
 * Serialises a file, symlink or directory tree into NAR bytes, exactly as `nix-store --dump`
 * does: directory entries sorted by the raw bytes of their names, a file executable when its
 * owner may execute it. Small fields are gathered into chunks of about 256 KiB and file
 * contents are read one chunk at a time, so memory does not grow with file size.
 * Wrap it in `Readable.from()` to pipe it.
 * @throws CairnError INVALID_ARGUMENT on a file type a NAR cannot hold (socket, device, fifo)
 *   or a file that shrinks while it is read.
 */
export async function* dumpNar(path: string | Buffer): AsyncGenerator<Buffer, void, undefined> {
  const out = new ChunkBuilder();
  out.push(T.magic);
  yield* dumpNode(typeof path === 'string' ? Buffer.from(path) : path, out);
  yield* out.flush();
}

async function* dumpNode(path: Buffer, out: ChunkBuilder): AsyncGenerator<Buffer, void, undefined> {
  const st = await lstat(path);
  out.push(T.open, T.type);
  if (st.isFile()) {
    out.push(T.regular);
    // Nix looks at the owner's execute bit only.
    if (st.mode & 0o100) out.push(T.executable, T.empty);
    out.push(T.contents, sizeField(st.size));
    yield* dumpContents(path, st.size, out);
    out.push(ZEROS.subarray(0, narPadding(st.size)));
  } else if (st.isSymbolicLink()) {
    out.push(T.symlink, T.target, encodeNarString(await readlink(path, { encoding: 'buffer' })));
  } else if (st.isDirectory()) {
    out.push(T.directory);
    // Buffer names keep bytes that are not UTF-8 intact, and sort as Nix sorts them.
    const names = (await readdir(path, { encoding: 'buffer' })).sort(Buffer.compare);
    for (const name of names) {
      out.push(T.entry, T.open, T.name, encodeNarString(name), T.node);
      yield* dumpNode(Buffer.concat([path, SLASH, name]), out);
      out.push(T.close);
    }
  } else {
    throw new CairnError('INVALID_ARGUMENT', `Cannot dump NAR: unsupported file type (${path})`);
  }
  out.push(T.close);
  if (out.length >= CHUNK_SIZE) yield* out.flush();
}

async function* dumpContents(path: Buffer, size: number, out: ChunkBuilder): AsyncGenerator<Buffer> {
  if (size === 0) return;
  // O_NOFOLLOW: if the file was swapped for a symlink since lstat, fail rather than dump what it points to.
  const file = await open(path, constants.O_RDONLY | constants.O_NOFOLLOW);
  try {
    for (let done = 0; done < size; ) {
      // A fresh buffer per read: the consumer may still hold the previous one.
      const want = Math.min(CHUNK_SIZE, size - done);
      const buffer = Buffer.allocUnsafe(want);
      let filled = 0;
      while (filled < want) {
        const { bytesRead } = await file.read(buffer, filled, want - filled, done + filled);
        if (bytesRead === 0) {
          throw new CairnError(
            'INVALID_ARGUMENT',
            `Cannot dump NAR: file shrank while it was read (${path}: ${size} bytes expected, ${done + filled} read)`,
          );
        }
        filled += bytesRead;
      }
      done += want;
      if (want >= DIRECT_SIZE) {
        // Big reads go out as they are rather than being copied into a gathered chunk.
        yield* out.flush();
        yield buffer;
      } else {
        out.push(buffer);
        if (out.length >= CHUNK_SIZE) yield* out.flush();
      }
    }
  } finally {
    await file.close();
  }
}

function sizeField(size: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(BigInt(size));
  return b;
}

/** Gathers small buffers and hands them out as one chunk, so a tree of tiny files is not a stream of tiny chunks. */
class ChunkBuilder {
  #parts: Buffer[] = [];
  length = 0;

  push(...parts: Buffer[]): void {
    for (const part of parts) {
      this.#parts.push(part);
      this.length += part.length;
    }
  }

  *flush(): Generator<Buffer> {
    if (this.length === 0) return;
    // A single part (typically a chunk of file contents) goes out as is, without a copy.
    const chunk = this.#parts.length === 1 ? this.#parts[0]! : Buffer.concat(this.#parts, this.length);
    this.#parts = [];
    this.length = 0;
    yield chunk;
  }
}
