import { type ChildProcessByStdio, spawn } from 'node:child_process';
import type { Readable, Writable } from 'node:stream';

/** Compressions the cache accepts for NAR files, with the file extension Nix gives each. */
export const NAR_COMPRESSIONS = { none: '.nar', xz: '.nar.xz', zstd: '.nar.zst', bzip2: '.nar.bz2' } as const;

/** A compression the cache accepts. */
export type NarCompression = keyof typeof NAR_COMPRESSIONS;

/** The decompressor of each compression: Nix's `?compression=` names (bzip2 is its oldest default). */
const DECOMPRESSORS: Record<Exclude<NarCompression, 'none'>, [string, string[]]> = {
  xz: ['xz', ['-dc']],
  zstd: ['zstd', ['-dcq']],
  bzip2: ['bzip2', ['-dc']],
};

/**
 * Starts a decompressor process (`xz -dc`, `zstd -dc` or `bzip2 -dc`). Node 20's zlib has none
 * of them; the system tools are fast, stream, and are what Nix itself links against.
 */
export function spawnDecompressor(
  compression: Exclude<NarCompression, 'none'>,
): ChildProcessByStdio<Writable, Readable, Readable> {
  const [cmd, args] = DECOMPRESSORS[compression];
  return spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'] });
}
