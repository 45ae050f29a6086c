import { createHash, randomBytes } from 'node:crypto';

/** Every Cairn token starts with this, so secret scanners can find leaked ones. */
export const TOKEN_PREFIX = 'cairn_';

/** Token secrets: 256 random bits in base64url after the prefix. */
const TOKEN_PATTERN = /^cairn_[A-Za-z0-9_-]{43}$/;

/** Makes a new token secret: the prefix and 256 bits of randomness. */
export function generateTokenSecret(): string {
  return TOKEN_PREFIX + randomBytes(32).toString('base64url');
}

/** Enrolment tokens start with this: they register agents and do nothing else. */
export const ENROL_TOKEN_PREFIX = 'cairn_enrol_';
const ENROL_TOKEN_PATTERN = /^cairn_enrol_[A-Za-z0-9_-]{43}$/;

/** Makes a new enrolment token secret: its prefix and 256 bits of randomness. */
export function generateEnrolTokenSecret(): string {
  return ENROL_TOKEN_PREFIX + randomBytes(32).toString('base64url');
}

/** True when `s` has the shape of an enrolment token (it may still be unknown, used up or revoked). */
export function looksLikeEnrolToken(s: string): boolean {
  return ENROL_TOKEN_PATTERN.test(s);
}

/** True when `s` has the shape of a Cairn token (it may still be unknown or revoked). */
export function looksLikeToken(s: string): boolean {
  return TOKEN_PATTERN.test(s);
}

/**
 * Hashes a token for storage and lookup. A plain SHA-256 suffices: the secret has 256 bits
 * of entropy, so there is nothing to brute-force, and the lookup stays one indexed query.
 */
export function hashTokenSecret(secret: string): string {
  return createHash('sha256').update(secret).digest('hex');
}
