import {
  encodeNarString,
  formatNarPath,
  NAR_LIMITS,
  NAR_MAGIC,
  type NarPath,
  type NarSource,
  narError,
  quoteNarBytes,
} from './nar-format.ts';
import { NarReader } from './nar-reader.ts';

/**
 * One step of a NAR, in archive order. A `regular` event is followed by `contents` events
 * carrying exactly `size` bytes in total; the nodes inside a directory follow its `directory` event.
 */
export type NarEvent =
  | { readonly type: 'directory'; readonly path: NarPath }
  | {
      readonly type: 'regular';
      readonly path: NarPath;
      readonly executable: boolean;
      readonly size: number;
      /** Byte offset of the contents in the archive, as `.ls` listings give `narOffset`. */
      readonly offset: number;
    }
  | { readonly type: 'contents'; readonly chunk: Buffer }
  | { readonly type: 'symlink'; readonly path: NarPath; readonly target: Buffer };

/** Bounds checked while parsing; defaults in {@link NAR_LIMITS}. */
export interface ParseNarOptions {
  readonly maxNameLength?: number;
  readonly maxTargetLength?: number;
  readonly maxDepth?: number;
}

/** A directory whose entries are being read; `previous` is the last name, for the order check. */
interface OpenDirectory {
  readonly path: NarPath;
  previous: Buffer | undefined;
}

/**
 * Parses and validates a NAR stream, yielding its nodes without writing anything, so that a
 * server can check an upload while hashing it. It accepts only the canonical form
 * `nix-store --dump` writes, and reads to the end of the source to reject trailing data.
 * `contents` chunks are views into the input chunks, so memory stays at about one chunk.
 * The nesting is tracked on an explicit stack, not by recursion, so depth costs nothing per event.
 * @throws CairnError INVALID_NAR naming the fault and where it is.
 */
export async function* parseNar(
  source: NarSource,
  options: ParseNarOptions = {},
): AsyncGenerator<NarEvent, void, undefined> {
  // Field by field, so that an explicit undefined from JS callers keeps the default.
  const limits = {
    maxNameLength: options.maxNameLength ?? NAR_LIMITS.maxNameLength,
    maxTargetLength: options.maxTargetLength ?? NAR_LIMITS.maxTargetLength,
    maxDepth: options.maxDepth ?? NAR_LIMITS.maxDepth,
  };
  const r = new NarReader(source);
  try {
    await readMagic(r);
    const open: OpenDirectory[] = [];
    for (;;) {
      // One node at r.path.
      await r.expect('(');
      await r.expect('type');
      const { token: type, at } = await r.readToken("'regular', 'symlink' or 'directory'");
      if (type === 'regular') {
        yield* readRegular(r);
      } else if (type === 'symlink') {
        yield await readSymlink(r, limits.maxTargetLength);
      } else if (type === 'directory') {
        yield { type: 'directory', path: r.path };
        open.push({ path: r.path, previous: undefined });
      } else {
        throw narError('unknown file type', `${quoteNarBytes(Buffer.from(type, 'latin1'))} ${r.where(at)}`);
      }
      if (type !== 'directory' && open.length > 0) await r.expect(')'); // closes this node's entry
      // Move to the next entry of the innermost open directory, closing those that are done.
      const next = await nextEntry(r, open, limits);
      if (next === undefined) break;
      r.path = next;
    }
    if (!(await r.atEnd())) throw narError('trailing data after the archive', `at byte ${r.offset}`);
  } finally {
    await r.close();
  }
}

const MAGIC_BYTES = encodeNarString(NAR_MAGIC);

async function readMagic(r: NarReader): Promise<void> {
  // Compare raw bytes rather than read a length first, so that junk such as an HTML error
  // page is reported as bad magic and quoted, not as an absurd length.
  const head = await r.read(8, 'the magic string');
  let found = head;
  if (head.equals(MAGIC_BYTES.subarray(0, 8))) {
    const rest = await r.read(MAGIC_BYTES.length - 8, 'the magic string');
    if (rest.equals(MAGIC_BYTES.subarray(8))) return;
    found = rest.subarray(0, NAR_MAGIC.length);
  }
  throw narError(
    'bad magic, not a NAR archive',
    `expected "${NAR_MAGIC}", found ${quoteNarBytes(found)} at byte 0`,
  );
}

async function* readRegular(r: NarReader): AsyncGenerator<NarEvent, void, undefined> {
  let expected = "'executable' or 'contents'";
  let field = await r.readToken(expected);
  const executable = field.token === 'executable';
  if (executable) {
    const at = r.offset;
    const marker = await r.readLength('the executable marker');
    if (marker !== 0) throw narError('executable marker is not empty', `${marker} bytes ${r.where(at)}`);
    expected = "'contents'";
    field = await r.readToken(expected);
  }
  if (field.token !== 'contents') throw r.unexpected(expected, field.token, field.at);
  const size = await r.readLength('the file contents');
  yield { type: 'regular', path: r.path, executable, size, offset: r.offset };
  const what = `the contents of ${formatNarPath(r.path)}`;
  for (let left = size; left > 0; ) {
    const chunk = await r.readSome(left, what);
    left -= chunk.length;
    yield { type: 'contents', chunk };
  }
  await r.readPadding(size, 'the file contents');
  await r.expect(')');
}

async function readSymlink(r: NarReader, maxLength: number): Promise<NarEvent> {
  await r.expect('target');
  const at = r.offset;
  const target = await r.readString(maxLength, 'the symlink target');
  // symlink(2) cannot create either, so no real tree has them.
  if (target.length === 0) throw narError('symlink target is empty', r.where(at));
  if (target.includes(0)) {
    throw narError('symlink target contains NUL', `${quoteNarBytes(target)} ${r.where(at)}`);
  }
  await r.expect(')');
  return { type: 'symlink', path: r.path, target };
}

/** Reads up to the next entry's node and returns its path, or undefined once the root is closed. */
async function nextEntry(
  r: NarReader,
  open: OpenDirectory[],
  limits: Required<ParseNarOptions>,
): Promise<NarPath | undefined> {
  for (let dir = open.at(-1); dir !== undefined; dir = open.at(-1)) {
    r.path = dir.path;
    const { token, at } = await r.readToken("'entry' or ')'");
    if (token === ')') {
      open.pop();
      if (open.length > 0) await r.expect(')'); // closes the entry of the directory just finished
      continue;
    }
    if (token !== 'entry') throw r.unexpected("'entry' or ')'", token, at);
    await r.expect('(');
    await r.expect('name');
    const nameAt = r.offset;
    const name = await r.readString(limits.maxNameLength, 'an entry name');
    const fault = nameFault(name);
    if (fault !== undefined) throw narError(fault, `${quoteNarBytes(name)} ${r.where(nameAt)}`);
    // Strictly increasing bytes: one order for one tree, and no name twice.
    const order = dir.previous === undefined ? -1 : Buffer.compare(dir.previous, name);
    if (order >= 0) {
      const fault = order === 0 ? 'duplicate entry name' : 'entries are not sorted';
      throw narError(
        fault,
        `${quoteNarBytes(name)} after ${quoteNarBytes(dir.previous!)} ${r.where(nameAt)}`,
      );
    }
    dir.previous = name;
    await r.expect('node');
    if (open.length > limits.maxDepth) {
      throw narError('directories are nested too deeply', `limit ${limits.maxDepth}, ${r.where(nameAt)}`);
    }
    return [...dir.path, name];
  }
  return undefined;
}

const DOT = Buffer.from('.');
const DOT_DOT = Buffer.from('..');

/** Why an entry name cannot be a file name, or undefined when it can. */
function nameFault(name: Buffer): string | undefined {
  if (name.length === 0) return 'entry name is empty';
  if (name.equals(DOT) || name.equals(DOT_DOT)) return `entry name is '${name}'`;
  if (name.includes(0x2f)) return "entry name contains '/'";
  if (name.includes(0)) return 'entry name contains NUL';
  return undefined;
}
