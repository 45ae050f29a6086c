import { CairnError } from '../lib/cairn-error.ts';

/** Nix's base-32 alphabet: digits and lower-case letters without e, o, u and t. */
export const NIX32_ALPHABET = '0123456789abcdfghijklmnpqrsvwxyz';

const digitOf = new Int8Array(128).fill(-1);
for (let i = 0; i < NIX32_ALPHABET.length; i++) digitOf[NIX32_ALPHABET.charCodeAt(i)] = i;

/** Length of the nix32 encoding of `byteLength` bytes. */
export function nix32Length(byteLength: number): number {
  return Math.ceil((byteLength * 8) / 5);
}

/**
 * Encodes bytes in Nix's base-32. Nix reads the bytes as one little-endian number and
 * prints its 5-bit digits most significant first, which is why this is not RFC 4648.
 */
export function encodeNix32(bytes: Uint8Array): string {
  const len = nix32Length(bytes.length);
  let out = '';
  for (let n = len - 1; n >= 0; n--) {
    const b = n * 5;
    const i = b >> 3;
    const j = b & 7;
    const lo = bytes[i]! >> j;
    const hi = i + 1 < bytes.length ? bytes[i + 1]! << (8 - j) : 0;
    out += NIX32_ALPHABET[(lo | hi) & 0x1f];
  }
  return out;
}

/** True when every character of `s` is in the nix32 alphabet. */
export function isNix32(s: string): boolean {
  for (let k = 0; k < s.length; k++) {
    const c = s.charCodeAt(k);
    if (c >= 128 || digitOf[c] === -1) return false;
  }
  return true;
}

/**
 * Decodes Nix base-32 into `byteLength` bytes (derived from the string's length when omitted).
 * @throws CairnError INVALID_NIX32 on a character outside the alphabet, a wrong length, or
 *   bits set beyond the last byte.
 */
export function decodeNix32(s: string, byteLength = Math.floor((s.length * 5) / 8)): Uint8Array {
  if (s.length !== nix32Length(byteLength)) {
    throw new CairnError(
      'INVALID_NIX32',
      `Cannot decode nix32: expected ${nix32Length(byteLength)} characters for ${byteLength} bytes, got ${s.length} (${s})`,
    );
  }
  const out = new Uint8Array(byteLength);
  for (let n = 0; n < s.length; n++) {
    const code = s.charCodeAt(s.length - n - 1);
    const digit = code < 128 ? digitOf[code]! : -1;
    if (digit < 0) {
      throw new CairnError(
        'INVALID_NIX32',
        `Cannot decode nix32: invalid character '${s[s.length - n - 1]}' (${s})`,
      );
    }
    const b = n * 5;
    const i = b >> 3;
    const j = b & 7;
    out[i] = out[i]! | ((digit << j) & 0xff);
    const carry = digit >> (8 - j);
    if (i + 1 < byteLength) out[i + 1] = out[i + 1]! | carry;
    else if (carry !== 0) {
      throw new CairnError(
        'INVALID_NIX32',
        `Cannot decode nix32: value has bits beyond ${byteLength} bytes (${s})`,
      );
    }
  }
  return out;
}
