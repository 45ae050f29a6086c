import {
  formatNarPath,
  type NarPath,
  type NarSource,
  narError,
  narPadding,
  quoteNarBytes,
} from './nar-format.ts';

const EMPTY = Buffer.alloc(0);
/** Tokens are at most 13 bytes ("nix-archive-1"); a longer string is never a token. */
const MAX_TOKEN_LENGTH = 16;
/** A length above 2^53 - 1 cannot be counted exactly in a JS number, and no real file is that big. */
const MAX_HIGH_WORD = 0x1fffff;

/**
 * Reads NAR fields (lengths, strings, tokens) from a stream of chunks of any size, for the
 * NAR parser. Reads that fit in the current chunk return a view of it without copying, and
 * file contents are handed out as views too, so memory stays at about one input chunk.
 * Every fault is an INVALID_NAR error naming the byte offset and `path`, the node being read.
 */
export class NarReader {
  /** The node being read, named in error messages. */
  path: NarPath = [];
  readonly #source: AsyncIterator<Uint8Array> | Iterator<Uint8Array>;
  #chunk: Buffer = EMPTY;
  #pos = 0;
  #consumed = 0; // bytes of the chunks before #chunk
  #done = false;

  constructor(source: NarSource) {
    this.#source =
      Symbol.asyncIterator in source ? source[Symbol.asyncIterator]() : source[Symbol.iterator]();
  }

  /** Number of bytes consumed so far: the offset of the next byte in the archive. */
  get offset(): number {
    return this.#consumed + this.#pos;
  }

  /** Where a fault is, for messages: "at byte N in a/b". */
  where(offset = this.offset): string {
    return `at byte ${offset} in ${formatNarPath(this.path)}`;
  }

  /**
   * Returns exactly `n` bytes; a view into the input when they lie in one chunk.
   * `what` names the field when the archive ends first.
   */
  async read(n: number, what: string): Promise<Buffer> {
    if (n <= this.#chunk.length - this.#pos) {
      const view = this.#chunk.subarray(this.#pos, this.#pos + n);
      this.#pos += n;
      return view;
    }
    // Spans chunks: copy into one buffer. Only small fields (at most a name or a target) get here.
    const out = Buffer.allocUnsafe(n);
    for (let filled = 0; filled < n; ) {
      if (this.#pos === this.#chunk.length && !(await this.#next())) throw this.#truncated(what);
      const take = Math.min(n - filled, this.#chunk.length - this.#pos);
      this.#chunk.copy(out, filled, this.#pos, this.#pos + take);
      this.#pos += take;
      filled += take;
    }
    return out;
  }

  /** Returns between 1 and `max` bytes as a view into the input, waiting for one chunk at most. */
  async readSome(max: number, what: string): Promise<Buffer> {
    if (this.#pos === this.#chunk.length && !(await this.#next())) throw this.#truncated(what);
    const take = Math.min(max, this.#chunk.length - this.#pos);
    const view = this.#chunk.subarray(this.#pos, this.#pos + take);
    this.#pos += take;
    return view;
  }

  /** Reads a 64-bit little-endian length, rejecting one that a JS number cannot hold exactly. */
  async readLength(what: string): Promise<number> {
    const at = this.offset;
    const bytes = await this.read(8, `the length of ${what}`);
    const high = bytes.readUInt32LE(4);
    if (high > MAX_HIGH_WORD) {
      throw narError(`absurd length of ${what}`, `0x${bytes.toString('hex')} ${this.where(at)}`);
    }
    return high * 2 ** 32 + bytes.readUInt32LE(0);
  }

  /** Reads the zero bytes that pad a string of `length` bytes to a multiple of 8. */
  async readPadding(length: number, what: string): Promise<void> {
    const at = this.offset;
    const padding = await this.read(narPadding(length), `the padding of ${what}`);
    // At most 7 bytes, so a loop is fine here.
    for (const byte of padding) {
      if (byte !== 0) throw narError(`non-zero padding after ${what}`, this.where(at));
    }
  }

  /** Reads a string of at most `max` bytes, copied so that callers do not pin input chunks. */
  async readString(max: number, what: string): Promise<Buffer> {
    const at = this.offset;
    const length = await this.readLength(what);
    if (length > max)
      throw narError(`${what} is too long`, `${length} bytes, limit ${max}, ${this.where(at)}`);
    const bytes = Buffer.from(await this.read(length, what));
    await this.readPadding(length, what);
    return bytes;
  }

  /** Reads a short string where a token is due; `expected` says which, for messages. */
  async readToken(expected: string): Promise<{ token: string; at: number }> {
    const at = this.offset;
    const what = `a token (${expected} expected)`;
    const length = await this.readLength(what);
    if (length > MAX_TOKEN_LENGTH) {
      throw narError(`expected ${expected}`, `found a string of ${length} bytes ${this.where(at)}`);
    }
    const bytes = await this.read(length, what);
    await this.readPadding(length, what);
    return { token: bytes.toString('latin1'), at };
  }

  /** Reads one token and fails unless it is `expected`. */
  async expect(expected: string): Promise<void> {
    const { token, at } = await this.readToken(`'${expected}'`);
    if (token !== expected) throw this.unexpected(`'${expected}'`, token, at);
  }

  /** The error for a token other than the one expected. */
  unexpected(expected: string, token: string, at: number) {
    return narError(
      `expected ${expected}`,
      `found ${quoteNarBytes(Buffer.from(token, 'latin1'))} ${this.where(at)}`,
    );
  }

  /** True when no bytes are left in the source. */
  async atEnd(): Promise<boolean> {
    return this.#pos === this.#chunk.length && !(await this.#next());
  }

  /** Stops the source early (destroying a Readable), as when the parser rejects the archive. */
  async close(): Promise<void> {
    if (this.#done) return;
    this.#done = true;
    await this.#source.return?.();
  }

  /** Loads the next non-empty chunk; false at the end of the source. */
  async #next(): Promise<boolean> {
    while (!this.#done) {
      const { value, done } = await this.#source.next();
      if (done) {
        this.#done = true;
        break;
      }
      // A Readable with an encoding set yields strings, which have lost the bytes.
      if (!(value instanceof Uint8Array)) throw new TypeError('A NAR source must yield bytes, not strings');
      const chunk = Buffer.from(value.buffer, value.byteOffset, value.byteLength);
      if (chunk.length === 0) continue;
      this.#consumed += this.#chunk.length;
      this.#chunk = chunk;
      this.#pos = 0;
      return true;
    }
    return false;
  }

  #truncated(what: string) {
    return narError('archive is truncated', `it ends while reading ${what}, ${this.where()}`);
  }
}
