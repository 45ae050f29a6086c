import type { Readable, Writable } from 'node:stream';

/** A blob being written: visible under its key only after `commit`. */
export interface BlobWriter {
  /** Writes a chunk, resolving once the store can take more (backpressure). */
  write(chunk: Uint8Array): Promise<void>;
  /** Makes the blob visible, atomically replacing any blob with the same key. */
  commit(): Promise<void>;
  /** Discards what was written. Safe to call after a failed write, and more than once. */
  abort(): Promise<void>;
}

/** A blob to read, whole or a byte range of it. */
export interface BlobRead {
  readonly size: number;
  readonly stream: Readable;
  /**
   * Writes the blob to `sink` and ends it, resolving once all was handed to the sink; the store's
   * own fast path, used instead of `stream` when present. Use one or the other, not both.
   */
  readonly writeTo?: (sink: Writable) => Promise<void>;
}

/**
 * Where NAR files and other cache files live. Keys are relative slash-separated paths made
 * of safe characters (the caller validates names; implementations check again).
 */
export interface BlobStore {
  createWriter(key: string): Promise<BlobWriter>;
  /** Size of the blob, or undefined when it does not exist. */
  stat(key: string): Promise<{ size: number } | undefined>;
  /** Opens `[start, end]` (inclusive) of the blob, or all of it; undefined when missing. */
  read(key: string, range?: { start: number; end: number }): Promise<BlobRead | undefined>;
  delete(key: string): Promise<void>;
  /**
   * A URL the client may fetch the blob from directly for a few minutes (a presigned GET),
   * present only when the store is set to answer downloads with a redirect.
   */
  readonly downloadUrl?: ((key: string) => Promise<string>) | undefined;
}
