import { type NarInfo, parseNarInfo, serializeNarInfo } from '../../nix/narinfo.ts';
import { signNarInfo } from '../../nix/narinfo-signature.ts';
import type { SecretKey } from '../../nix/signing-key.ts';

/** The keys a cache signs with, and the names of every key it ever had. */
export interface CacheSigners {
  /** Active keys, oldest first: each signs every narinfo served. */
  readonly keys: readonly SecretKey[];
  /** Names of every key the cache has had, retired ones included. */
  readonly keyNames: ReadonlySet<string>;
}

/**
 * The narinfo's signatures as the cache publishes them: those of other signers (kept as
 * uploaded), then one by each active key of the cache. Signatures by the cache's retired keys
 * are dropped, so that retiring a key stops it from vouching for any path.
 */
export function cacheSignatures(info: NarInfo, signers: CacheSigners): string[] {
  const others = info.sigs.filter((s) => !signers.keyNames.has(s.slice(0, s.indexOf(':'))));
  return [...others, ...signers.keys.map((k) => signNarInfo(info, k))];
}

/**
 * A stored narinfo as it is served now: unchanged when its signatures by the cache are exactly
 * those of its active keys (the usual case), or else signed again. A narinfo stored before a key
 * rotation thus gains the new key's signature, and one stored before a retirement loses the
 * retired key's.
 */
export function resignNarInfo(text: string, signers: CacheSigners): string {
  const own = [...text.matchAll(/^Sig: ([^:\n]+):/gm)]
    .map((m) => m[1]!)
    .filter((name) => signers.keyNames.has(name));
  const active = signers.keys.map((k) => k.name);
  if (own.length === active.length && active.every((name, i) => own[i] === name)) return text;
  const info = parseNarInfo(text);
  return serializeNarInfo({ ...info, sigs: cacheSignatures(info, signers) });
}
