import { CairnError } from '../lib/cairn-error.ts';

/**
 * The NAR (Nix ARchive) format, as `nix-store --dump` writes it. Every field is a string:
 * an 8-byte little-endian length, the bytes, then zero bytes up to a multiple of 8.
 *
 * ```
 * nar   = "nix-archive-1" node
 * node  = "(" "type" ( "regular" ["executable" ""] "contents" <bytes>
 *                    | "symlink" "target" <bytes>
 *                    | "directory" ( "entry" "(" "name" <bytes> "node" node ")" )* ) ")"
 * ```
 * Directory entries are sorted by the raw bytes of their names. Cairn accepts exactly this
 * canonical form, so one tree has one NAR and therefore one NAR hash.
 */
export const NAR_MAGIC = 'nix-archive-1';

/** A path inside a NAR: the entry names from the root down, as raw bytes; empty for the root. */
export type NarPath = readonly Buffer[];

/**
 * Where NAR bytes come from: a Readable, an async generator, or an array of chunks. Chunks are
 * kept as they are for a while (file contents are handed on as views), so a source must not
 * refill a chunk it has yielded; Readables never do.
 */
export type NarSource = AsyncIterable<Uint8Array> | Iterable<Uint8Array>;

/** Default bounds that stop a hostile archive from making a reader allocate or recurse without limit. */
export const NAR_LIMITS = {
  /** Longest entry name in bytes: NAME_MAX on Linux and macOS. */
  maxNameLength: 255,
  /** Longest symlink target in bytes: PATH_MAX less its terminating NUL. */
  maxTargetLength: 4095,
  /** Deepest directory nesting (the root is depth 0): far beyond real trees, it bounds the parser's stack. */
  maxDepth: 1024,
} as const;

/** Number of zero bytes that follow a string of `length` bytes. */
export function narPadding(length: number): number {
  return (8 - (length % 8)) % 8;
}

/** Encodes one NAR string: length, bytes, zero padding. */
export function encodeNarString(value: string | Uint8Array): Buffer {
  const bytes = typeof value === 'string' ? Buffer.from(value) : value;
  const out = Buffer.alloc(8 + bytes.length + narPadding(bytes.length));
  out.writeUInt32LE(bytes.length, 0); // the high 4 bytes stay zero: names and tokens are short
  out.set(bytes, 8);
  return out;
}

/** Longest path {@link formatNarPath} shows: a path may be 1024 names of 255 bytes deep. */
const MAX_SHOWN_PATH = 200;

/**
 * A path inside a NAR as a readable string, for messages: `a/b/c`, or `/` for the root.
 * Control characters are escaped (`\n`, `\u001b`): names come from the archive, and a message
 * must not carry a line break or a terminal escape into logs. A path longer than 200 characters
 * keeps its end, `.../y/z`; only the names shown are formatted, so the cost does not grow with depth.
 */
export function formatNarPath(path: NarPath): string {
  if (path.length === 0) return '/';
  const names: string[] = [];
  let length = -1;
  for (let i = path.length - 1; i >= 0 && length <= MAX_SHOWN_PATH; i--) {
    const name = escapeControls(path[i]!.toString('utf8'));
    names.unshift(name);
    length += name.length + 1;
  }
  const shown = names.join('/');
  return names.length === path.length && shown.length <= MAX_SHOWN_PATH
    ? shown
    : `...${shown.slice(-MAX_SHOWN_PATH)}`;
}

/** Quotes bytes from an archive for a message, escaping control characters and cutting long values. */
export function quoteNarBytes(bytes: Uint8Array, max = 64): string {
  const text = Buffer.from(bytes.subarray(0, max)).toString('utf8');
  // JSON.stringify escapes C0 controls but leaves DEL and the C1 controls as they are.
  return escapeControls(JSON.stringify(text)) + (bytes.length > max ? `... (${bytes.length} bytes)` : '');
}

const ESCAPES: Readonly<Record<string, string>> = { '\n': '\\n', '\r': '\\r', '\t': '\\t' };

function escapeControls(text: string): string {
  return text.replace(/\p{Cc}/gu, (c) => ESCAPES[c] ?? `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

/** The INVALID_NAR error: "Cannot unpack NAR: <fault> (<where/value>)". */
export function narError(fault: string, where: string): CairnError {
  return new CairnError('INVALID_NAR', `Cannot unpack NAR: ${fault} (${where})`);
}
