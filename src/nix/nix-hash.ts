import { CairnError } from '../lib/cairn-error.ts';
import { decodeNix32, encodeNix32, isNix32, nix32Length } from './nix32.ts';

/** Hash algorithms Nix uses, with their digest sizes in bytes. */
export const HASH_SIZES = { md5: 16, sha1: 20, sha256: 32, sha512: 64 } as const;

/** A hash algorithm Nix knows. */
export type HashAlgorithm = keyof typeof HASH_SIZES;

/** A parsed hash: its algorithm and raw digest bytes. */
export interface NixHash {
  readonly algorithm: HashAlgorithm;
  readonly digest: Uint8Array;
}

function isAlgorithm(s: string): s is HashAlgorithm {
  return Object.hasOwn(HASH_SIZES, s);
}

function invalid(reason: string, value: string): CairnError {
  return new CairnError('INVALID_HASH', `Cannot parse hash: ${reason} (${value})`);
}

/**
 * Parses a hash as Nix prints it: `algo:<nix32>`, `algo:<base16>`, `algo:<base64>` or SRI `algo-<base64>`.
 * @throws CairnError INVALID_HASH naming what is wrong.
 */
export function parseNixHash(text: string): NixHash {
  const m = /^([a-z0-9]+)([:-])(.*)$/.exec(text);
  if (!m) throw invalid('expected <algorithm>:<digest> or SRI <algorithm>-<base64>', text);
  const [, algorithm = '', sep, body = ''] = m;
  if (!isAlgorithm(algorithm)) throw invalid(`unsupported algorithm '${algorithm}'`, text);
  const size = HASH_SIZES[algorithm];
  let digest: Uint8Array;
  if (sep === '-') {
    digest = decodeBase64Strict(body, size, text);
  } else if (body.length === size * 2 && /^[0-9a-f]+$/.test(body)) {
    digest = new Uint8Array(Buffer.from(body, 'hex'));
  } else if (body.length === nix32Length(size)) {
    if (!isNix32(body)) throw invalid('digest is not valid nix32', text);
    try {
      digest = decodeNix32(body, size);
    } catch (err) {
      throw new CairnError('INVALID_HASH', `Cannot parse hash: digest is not valid nix32 (${text})`, {
        cause: err,
      });
    }
  } else {
    digest = decodeBase64Strict(body, size, text);
  }
  return { algorithm, digest };
}

function decodeBase64Strict(body: string, size: number, text: string): Uint8Array {
  if (body.length !== Math.ceil(size / 3) * 4 || !/^[A-Za-z0-9+/]+={0,2}$/.test(body)) {
    throw invalid(`digest has the wrong length or encoding for ${size} bytes`, text);
  }
  const bytes = Buffer.from(body, 'base64');
  if (bytes.length !== size || bytes.toString('base64') !== body) {
    throw invalid(`digest has the wrong length or encoding for ${size} bytes`, text);
  }
  return new Uint8Array(bytes);
}

/** Formats a hash as `algo:<nix32>`, the form narinfo files use. */
export function formatNixHash(hash: NixHash): string {
  return `${hash.algorithm}:${encodeNix32(hash.digest)}`;
}

/** Formats a hash in SRI form, `algo-<base64>`, as `nix path-info --json` prints it. */
export function formatSriHash(hash: NixHash): string {
  return `${hash.algorithm}-${Buffer.from(hash.digest).toString('base64')}`;
}

/** True when two hashes have the same algorithm and digest. */
export function nixHashEquals(a: NixHash, b: NixHash): boolean {
  return a.algorithm === b.algorithm && Buffer.from(a.digest).equals(Buffer.from(b.digest));
}

/**
 * Folds a digest into `size` bytes by XOR, as Nix's `compressHash` does to make the
 * 20-byte hash part of a store path from a sha256.
 */
export function compressHash(digest: Uint8Array, size: number): Uint8Array {
  const out = new Uint8Array(size);
  for (let i = 0; i < digest.length; i++) out[i % size] = out[i % size]! ^ digest[i]!;
  return out;
}
