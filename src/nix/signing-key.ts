import {
  createPrivateKey,
  createPublicKey,
  generateKeyPairSync,
  type KeyObject,
  sign,
  verify,
} from 'node:crypto';
import { CairnError } from '../lib/cairn-error.ts';

/** An ed25519 public key with its Nix name, as in `trusted-public-keys`. */
export interface PublicKey {
  readonly name: string;
  readonly keyObject: KeyObject;
}

/** An ed25519 secret key with its Nix name; the key material stays inside the KeyObject. */
export interface SecretKey {
  readonly name: string;
  readonly keyObject: KeyObject;
  readonly publicKey: PublicKey;
}

/** A detached signature as Nix writes it, `<key name>:<base64 of 64 bytes>`, split. */
export interface NixSignature {
  readonly keyName: string;
  readonly bytes: Uint8Array;
}

const SEED_BYTES = 32;
const PUBLIC_BYTES = 32;
const SIGNATURE_BYTES = 64;

/** Returns why `name` cannot name a Nix key, or undefined when it can. */
export function keyNameProblem(name: string): string | undefined {
  if (name === '') return 'the key name is empty';
  // trusted-public-keys is a whitespace-separated list of `name:key`, so neither may appear.
  if (/[\s:\p{Cc}]/u.test(name)) return 'the key name contains a colon, whitespace or a control character';
  return undefined;
}

/** Decodes canonical padded base64 of exactly `size` bytes, or returns undefined. */
function decodeBase64(text: string, size: number): Buffer | undefined {
  if (text.length % 4 !== 0 || !/^[A-Za-z0-9+/]*={0,2}$/.test(text)) return undefined;
  const bytes = Buffer.from(text, 'base64');
  return bytes.length === size && bytes.toString('base64') === text ? bytes : undefined;
}

/** Describes base64 text by its size, so that messages never show key material. */
function describeBase64(text: string): string {
  const bytes = Buffer.from(text, 'base64');
  return bytes.toString('base64') === text
    ? `${bytes.length} bytes`
    : `${text.length} characters, not canonical base64`;
}

/**
 * Splits `name:base64` and decodes the base64 part. Messages show the name and sizes only,
 * never the text: a secret key pasted where a public key belongs must not reach a log.
 */
function splitNamed(text: string, size: number, what: string, code: 'INVALID_KEY' | 'INVALID_SIGNATURE') {
  const fail = (fault: string, value: string) =>
    new CairnError(code, `Cannot parse ${what}: ${fault} (${value})`);
  const colon = text.indexOf(':');
  if (colon < 0) throw fail("expected '<name>:<base64>' but found no colon", `${text.length} characters`);
  const name = text.slice(0, colon);
  const problem = keyNameProblem(name);
  if (problem !== undefined) throw fail(problem, JSON.stringify(name));
  const encoded = text.slice(colon + 1);
  const bytes = decodeBase64(encoded, size);
  if (bytes === undefined) {
    throw fail(
      `expected ${size} bytes of canonical padded base64 after the name`,
      `${name}: ${describeBase64(encoded)}`,
    );
  }
  return { name, bytes };
}

/**
 * Parses a Nix secret key, `name:base64(seed ‖ public key)` as written by
 * `nix-store --generate-binary-cache-key`. One trailing newline is allowed, as in a key file.
 * @throws CairnError INVALID_KEY naming the fault, never showing key material.
 */
export function parseSecretKey(text: string): SecretKey {
  const { name, bytes } = splitNamed(
    text.replace(/\n$/, ''),
    SEED_BYTES + PUBLIC_BYTES,
    'secret key',
    'INVALID_KEY',
  );
  const d = bytes.subarray(0, SEED_BYTES).toString('base64url');
  const x = bytes.subarray(SEED_BYTES).toString('base64url');
  const keyObject = createPrivateKey({ key: { kty: 'OKP', crv: 'Ed25519', d, x }, format: 'jwk' });
  const publicKeyObject = createPublicKey(keyObject);
  // Node derives the public key from the seed and ignores `x`; libsodium (Nix) signs with the
  // stored half, so a mismatch would make Nix and Cairn disagree. Reject it.
  if (publicKeyObject.export({ format: 'jwk' }).x !== x) {
    throw new CairnError(
      'INVALID_KEY',
      `Cannot parse secret key: its public half does not match its seed (${name})`,
    );
  }
  return { name, keyObject, publicKey: { name, keyObject: publicKeyObject } };
}

/**
 * Parses a Nix public key, `name:base64(32 bytes)`, as in `trusted-public-keys`.
 * @throws CairnError INVALID_KEY naming the fault.
 */
export function parsePublicKey(text: string): PublicKey {
  const { name, bytes } = splitNamed(text.replace(/\n$/, ''), PUBLIC_BYTES, 'public key', 'INVALID_KEY');
  try {
    const x = bytes.toString('base64url');
    return { name, keyObject: createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x }, format: 'jwk' }) };
  } catch (err) {
    throw new CairnError('INVALID_KEY', `Cannot parse public key: not an ed25519 public key (${name})`, {
      cause: err,
    });
  }
}

/** Raw bytes of an ed25519 key, from its JWK member `d` (seed) or `x` (public key). */
function rawKey(keyObject: KeyObject, member: 'd' | 'x'): Buffer {
  return Buffer.from(keyObject.export({ format: 'jwk' })[member] ?? '', 'base64url');
}

/** Formats a secret key as Nix's key files hold it: `name:base64(seed ‖ public key)`, no newline. */
export function formatSecretKey(key: SecretKey): string {
  const bytes = Buffer.concat([rawKey(key.keyObject, 'd'), rawKey(key.publicKey.keyObject, 'x')]);
  return `${key.name}:${bytes.toString('base64')}`;
}

/** Formats a public key as `trusted-public-keys` lists it: `name:base64(32 bytes)`. */
export function formatPublicKey(key: PublicKey): string {
  return `${key.name}:${rawKey(key.keyObject, 'x').toString('base64')}`;
}

/**
 * Generates a new ed25519 key pair named `name`, the same kind `nix-store --generate-binary-cache-key` makes.
 * @throws CairnError INVALID_KEY when `name` cannot name a key.
 */
export function generateSecretKey(name: string): SecretKey {
  const problem = keyNameProblem(name);
  if (problem !== undefined)
    throw new CairnError('INVALID_KEY', `Cannot generate signing key: ${problem} (${name})`);
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  return { name, keyObject: privateKey, publicKey: { name, keyObject: publicKey } };
}

/** Signs `message` and returns the signature as Nix writes it, `name:base64(64 bytes)`. */
export function signDetached(message: string | Uint8Array, key: SecretKey): string {
  const signature = sign(null, Buffer.from(message), key.keyObject);
  return `${key.name}:${signature.toString('base64')}`;
}

/**
 * Parses a signature `name:base64(64 bytes)`, such as a narinfo `Sig` value.
 * @throws CairnError INVALID_SIGNATURE naming the fault.
 */
export function parseSignature(text: string): NixSignature {
  const { name, bytes } = splitNamed(text, SIGNATURE_BYTES, 'signature', 'INVALID_SIGNATURE');
  return { keyName: name, bytes: new Uint8Array(bytes) };
}

/** Options of {@link verifyDetached}. */
export interface VerifyOptions {
  /** The keys to accept signatures from; a signature by any other key does not verify. */
  readonly trustedKeys: readonly PublicKey[];
}

/**
 * Returns the name of the trusted key that made `signature` over `message`, or undefined when
 * none did. As in Nix, only keys whose name matches the signature's are tried.
 * @throws CairnError INVALID_SIGNATURE when `signature` is malformed.
 */
export function verifyDetached(
  message: string | Uint8Array,
  signature: string,
  options: VerifyOptions,
): string | undefined {
  const sig = parseSignature(signature);
  const data = Buffer.from(message);
  const signer = options.trustedKeys.find(
    (k) => k.name === sig.keyName && verify(null, data, k.keyObject, sig.bytes),
  );
  return signer?.name;
}
