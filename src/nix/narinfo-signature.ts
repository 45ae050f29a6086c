import { CairnError } from '../lib/cairn-error.ts';
import type { NarInfo } from './narinfo.ts';
import { formatNixHash } from './nix-hash.ts';
import { type PublicKey, type SecretKey, signDetached, verifyDetached } from './signing-key.ts';
import { STORE_DIR } from './store-path.ts';

/**
 * The text Nix signs for a store path:
 * `1;<store path>;sha256:<nix32 NAR hash>;<NAR size>;<comma-separated full reference paths>`.
 * References are sorted and deduplicated, as Nix holds them in a set; the hash is always
 * written as nix32, whatever form the narinfo used.
 * @throws CairnError INVALID_NARINFO when the NAR hash is not sha256 or the NAR size is 0.
 */
export function narInfoFingerprint(info: NarInfo): string {
  if (info.narHash.algorithm !== 'sha256') {
    throw new CairnError(
      'INVALID_NARINFO',
      `Cannot compute the narinfo fingerprint: NarHash is not sha256 (${formatNixHash(info.narHash)})`,
    );
  }
  if (info.narSize === 0) {
    throw new CairnError(
      'INVALID_NARINFO',
      `Cannot compute the narinfo fingerprint: NarSize is 0 (${info.storePath})`,
    );
  }
  const refs = [...new Set(info.references ?? [])].sort().map((ref) => `${STORE_DIR}/${ref}`);
  return `1;${info.storePath};${formatNixHash(info.narHash)};${info.narSize};${refs.join(',')}`;
}

/** Signs a narinfo's fingerprint and returns the `Sig` value, `<key name>:<base64>`. */
export function signNarInfo(info: NarInfo, key: SecretKey): string {
  return signDetached(narInfoFingerprint(info), key);
}

/**
 * Returns the names of the trusted keys with a valid signature among the narinfo's `Sig` values,
 * each name once. Signatures by untrusted keys and invalid signatures are not counted, as in Nix;
 * the caller compares the count with the number of signatures it needs.
 * @throws CairnError INVALID_SIGNATURE when a `Sig` value is malformed (Nix would skip it).
 */
export function verifyNarInfo(info: NarInfo, trustedKeys: readonly PublicKey[]): string[] {
  const fingerprint = narInfoFingerprint(info);
  const signers = new Set<string>();
  for (const sig of info.sigs) {
    const signer = verifyDetached(fingerprint, sig, { trustedKeys });
    if (signer !== undefined) signers.add(signer);
  }
  return [...signers];
}
