import { CairnError } from '../lib/cairn-error.ts';
import { formatNixHash, type NixHash, parseNixHash } from './nix-hash.ts';
import { parseStorePath } from './store-path.ts';

/** What `nix path-info --json` says of one valid path. */
export interface LocalPathInfo {
  readonly path: string;
  readonly narHash: NixHash;
  readonly narSize: number;
  /** Full store paths. */
  readonly references: readonly string[];
  readonly deriver?: string;
  readonly signatures: readonly string[];
  readonly ca?: string;
}

/**
 * Reads the output of `nix path-info --json`: an array of objects in Nix 2.8 to 2.18, an object
 * keyed by path in newer Nix (where invalid paths map to null). Hashes may be nix32 or SRI.
 * @throws CairnError INVALID_ARGUMENT when the JSON is not of either shape, or names an invalid path.
 */
export function parsePathInfoJson(text: string): LocalPathInfo[] {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new CairnError(
      'INVALID_ARGUMENT',
      `Cannot read nix path-info output: not JSON (${(err as Error).message})`,
    );
  }
  const entries: Array<[string | undefined, unknown]> = Array.isArray(json)
    ? json.map((e) => [undefined, e])
    : json !== null && typeof json === 'object'
      ? Object.entries(json)
      : [];
  const out: LocalPathInfo[] = [];
  for (const [key, value] of entries) {
    if (value === null) {
      throw new CairnError('INVALID_ARGUMENT', `Cannot push: ${key} is not a valid path in the local store`);
    }
    const v = value as Record<string, unknown>;
    const path = typeof v.path === 'string' ? v.path : key;
    if (typeof path !== 'string' || typeof v.narHash !== 'string' || typeof v.narSize !== 'number') {
      if (v.valid === false)
        throw new CairnError(
          'INVALID_ARGUMENT',
          `Cannot push: ${path} is not a valid path in the local store`,
        );
      throw new CairnError(
        'INVALID_ARGUMENT',
        `Cannot read nix path-info output: entry lacks path, narHash or narSize (${JSON.stringify(v).slice(0, 200)})`,
      );
    }
    parseStorePath(path);
    const refs = Array.isArray(v.references) ? (v.references as string[]) : [];
    for (const r of refs) parseStorePath(r);
    const info: LocalPathInfo = {
      path,
      narHash: parseNixHash(v.narHash),
      narSize: v.narSize,
      references: refs,
      signatures: Array.isArray(v.signatures) ? (v.signatures as string[]) : [],
      ...(typeof v.deriver === 'string' ? { deriver: v.deriver } : {}),
      ...(typeof v.ca === 'string' ? { ca: v.ca } : {}),
    };
    out.push(info);
  }
  return out;
}

/** `sha256:<nix32>` of a path-info hash, as narinfo files write it. */
export function narinfoHash(hash: NixHash): string {
  return formatNixHash(hash);
}
