import type { FileHandle } from 'node:fs/promises';

/**
 * A small POSIX tar (ustar) writer and reader: regular files only, names up to 255 bytes, sizes
 * of any length (GNU base-256 above 8 GiB), so that a backup opens with the system `tar` too.
 */

const BLOCK = 512;
/** The largest size ustar's 11 octal digits hold; beyond it the size is written in base-256. */
const MAX_OCTAL_SIZE = 8 ** 11 - 1;

/** One member of an archive: its name, its size, and where its contents start in the file. */
export interface TarEntry {
  readonly name: string;
  readonly size: number;
  readonly offset: number;
}

/** Thrown when the bytes are not the archive they should be; `message` says where. */
export class TarFormatError extends Error {}

/** The 512-byte header of a regular file `name` of `size` bytes, mode 0600. */
export function tarHeader(name: string, size: number, mtimeMs: number): Buffer {
  const header = Buffer.alloc(BLOCK);
  const bytes = Buffer.from(name, 'utf8');
  let prefix = Buffer.alloc(0);
  let base = bytes;
  if (bytes.length > 100) {
    // ustar splits a long name at a slash: prefix (up to 155 bytes) / name (up to 100).
    const cut = bytes.lastIndexOf(0x2f, 155);
    if (cut < 0 || bytes.length - cut - 1 > 100 || cut === 0) {
      throw new TarFormatError(`Cannot write the tar header: the name is too long (${name})`);
    }
    prefix = bytes.subarray(0, cut);
    base = bytes.subarray(cut + 1);
  }
  base.copy(header, 0);
  header.write('0000600\0', 100, 'ascii');
  header.write('0000000\0', 108, 'ascii');
  header.write('0000000\0', 116, 'ascii');
  if (size <= MAX_OCTAL_SIZE) header.write(`${size.toString(8).padStart(11, '0')}\0`, 124, 'ascii');
  else {
    header[124] = 0x80;
    let v = BigInt(size);
    for (let i = 135; i > 124; i--) {
      header[i] = Number(v & 0xffn);
      v >>= 8n;
    }
  }
  header.write(
    `${Math.floor(mtimeMs / 1000)
      .toString(8)
      .padStart(11, '0')}\0`,
    136,
    'ascii',
  );
  header.write('0', 156, 'ascii');
  header.write('ustar\x0000', 257, 'ascii');
  prefix.copy(header, 345);
  header.write('        ', 148, 'ascii');
  header.write(`${checksum(header).toString(8).padStart(6, '0')}\0 `, 148, 'ascii');
  return header;
}

/** Zero bytes that pad a member of `size` bytes to a whole block. */
export function tarPadding(size: number): Buffer {
  return Buffer.alloc((BLOCK - (size % BLOCK)) % BLOCK);
}

/** The end of an archive: two zero blocks. */
export function tarEnd(): Buffer {
  return Buffer.alloc(2 * BLOCK);
}

function checksum(header: Buffer): number {
  let sum = 0;
  for (const b of header) sum += b;
  return sum;
}

/**
 * The members of the archive in `file` (of `fileSize` bytes), in order, up to its end marker.
 * @throws TarFormatError when a header is damaged, a member or the end marker is cut off, or
 *   a member is not a regular file.
 */
export async function* readTarEntries(file: FileHandle, fileSize: number): AsyncGenerator<TarEntry> {
  let offset = 0;
  const header = Buffer.alloc(BLOCK);
  for (;;) {
    if (offset + BLOCK > fileSize) {
      throw new TarFormatError(`the file ends at byte ${fileSize}, before the archive's end marker`);
    }
    await readFully(file, header, offset);
    if (header.every((b) => b === 0)) {
      const next = Buffer.alloc(BLOCK);
      if (offset + 2 * BLOCK > fileSize) {
        throw new TarFormatError(`the file ends at byte ${fileSize}, inside the archive's end marker`);
      }
      await readFully(file, next, offset + BLOCK);
      if (!next.every((b) => b === 0)) throw new TarFormatError(`a damaged header at byte ${offset}`);
      return;
    }
    const stored = Number.parseInt(header.toString('ascii', 148, 156).replace(/[\0 ]/g, ''), 8);
    const copy = Buffer.from(header);
    copy.write('        ', 148, 'ascii');
    if (stored !== checksum(copy)) throw new TarFormatError(`a damaged header at byte ${offset}`);
    const type = String.fromCharCode(header[156] ?? 0);
    if (type !== '0' && type !== '\0') {
      throw new TarFormatError(
        `a member at byte ${offset} is not a regular file (type ${JSON.stringify(type)})`,
      );
    }
    const name = [cString(header, 345, 155), cString(header, 0, 100)].filter((s) => s !== '').join('/');
    const size = readSize(header);
    const start = offset + BLOCK;
    if (start + size > fileSize) {
      throw new TarFormatError(
        `the file ends at byte ${fileSize}, inside the member ${name} (${size} bytes)`,
      );
    }
    yield { name, size, offset: start };
    offset = start + size + tarPadding(size).length;
  }
}

/** Reads a member's contents in chunks of up to 1 MiB. */
export async function* readTarEntry(file: FileHandle, entry: TarEntry): AsyncGenerator<Buffer> {
  const chunk = Buffer.alloc(Math.min(1024 * 1024, Math.max(entry.size, 1)));
  for (let done = 0; done < entry.size; ) {
    const n = Math.min(chunk.length, entry.size - done);
    await readFully(file, chunk.subarray(0, n), entry.offset + done);
    done += n;
    yield Buffer.from(chunk.subarray(0, n));
  }
}

async function readFully(file: FileHandle, into: Buffer, position: number): Promise<void> {
  let got = 0;
  while (got < into.length) {
    const { bytesRead } = await file.read(into, got, into.length - got, position + got);
    if (bytesRead === 0) throw new TarFormatError(`the file ends at byte ${position + got}`);
    got += bytesRead;
  }
}

function cString(buf: Buffer, start: number, length: number): string {
  const field = buf.subarray(start, start + length);
  const end = field.indexOf(0);
  return field.subarray(0, end < 0 ? length : end).toString('utf8');
}

function readSize(header: Buffer): number {
  if ((header[124] ?? 0) & 0x80) {
    let v = 0n;
    for (let i = 125; i < 136; i++) v = (v << 8n) | BigInt(header[i] ?? 0);
    return Number(v);
  }
  const text = header.toString('ascii', 124, 136).replace(/[\0 ]/g, '');
  const size = Number.parseInt(text, 8);
  if (!/^[0-7]+$/.test(text) || !Number.isSafeInteger(size))
    throw new TarFormatError(`a damaged size field (${text})`);
  return size;
}
