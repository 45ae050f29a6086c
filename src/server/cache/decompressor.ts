import { type ChildProcessByStdio, spawn } from 'node:child_process';
import type { Readable, Writable } from 'node:stream';

/** Compressions the cache accepts for NAR files, with the file extension Nix gives each. */
export const NAR_COMPRESSIONS = { none: '.nar', xz: '.nar.xz', zstd: '.nar.zst' } as const;

/** A compression the cache accepts. */
export type NarCompression = keyof typeof NAR_COMPRESSIONS;

/**
 * Starts a decompressor process (`xz -dc` or `zstd -dc`). Node 20's zlib has neither xz nor
 * zstd; the system tools are fast, stream, and are what Nix itself links against.
 */
export function spawnDecompressor(
  compression: Exclude<NarCompression, 'none'>,
): ChildProcessByStdio<Writable, Readable, Readable> {
  const [cmd, args] = compression === 'xz' ? ['xz', ['-dc']] : ['zstd', ['-dcq']];
  return spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'] });
}
