import { CairnError } from '../lib/cairn-error.ts';
import { isNix32 } from './nix32.ts';

/** The store directory Cairn works with. Other store directories are not supported. */
export const STORE_DIR = '/nix/store';

/** Length of a store path's hash part in nix32 characters (160 bits). */
export const HASH_PART_LENGTH = 32;

/** Longest name Nix allows in a store path. */
export const MAX_NAME_LENGTH = 211;

/** A validated store path, split into its parts. */
export interface StorePath {
  /** The full path, `/nix/store/<hash>-<name>`. */
  readonly path: string;
  /** The 32-character nix32 hash part. */
  readonly hashPart: string;
  /** The name after the hash part and its dash. */
  readonly name: string;
}

const NAME_CHARS = /^[A-Za-z0-9+\-._?=]+$/;

/**
 * Returns why `name` is not a valid store path name, or undefined when it is.
 * Rules as in current Nix: 1 to 211 characters from `A-Za-z0-9+-._?=`, not `.` or `..`,
 * and not starting with `.-` or `..-`. Nix 2.8 is stricter (no leading dot at all); such
 * names are accepted here because newer clients can produce them.
 */
export function storePathNameProblem(name: string): string | undefined {
  if (name.length === 0) return 'name is empty';
  if (name.length > MAX_NAME_LENGTH) return `name is longer than ${MAX_NAME_LENGTH} characters`;
  if (!NAME_CHARS.test(name)) {
    const bad = [...name].find((c) => !NAME_CHARS.test(c)) ?? '';
    return `name contains the forbidden character ${JSON.stringify(bad)}`;
  }
  if (name === '.' || name === '..') return `name must not be '${name}'`;
  if (name.startsWith('.-') || name.startsWith('..-')) return 'name must not start with .- or ..-';
  return undefined;
}

/** Returns why `base` (`<hash>-<name>`) is not a valid store path base name, or undefined. */
export function storePathBaseNameProblem(base: string): string | undefined {
  if (base.length < HASH_PART_LENGTH + 2) return 'too short for a 32-character hash part and a name';
  const hashPart = base.slice(0, HASH_PART_LENGTH);
  if (!isNix32(hashPart)) return `hash part is not nix32 (${hashPart})`;
  if (base[HASH_PART_LENGTH] !== '-') return 'missing dash after the 32-character hash part';
  return storePathNameProblem(base.slice(HASH_PART_LENGTH + 1));
}

/**
 * Parses and validates `/nix/store/<32 nix32 chars>-<name>`.
 * @throws CairnError INVALID_STORE_PATH saying what is wrong.
 */
export function parseStorePath(path: string): StorePath {
  const prefix = `${STORE_DIR}/`;
  if (!path.startsWith(prefix)) {
    throw new CairnError('INVALID_STORE_PATH', `Cannot parse store path: not under ${STORE_DIR}/ (${path})`);
  }
  const base = path.slice(prefix.length);
  if (base.includes('/')) {
    throw new CairnError(
      'INVALID_STORE_PATH',
      `Cannot parse store path: it names a file inside a store path (${path})`,
    );
  }
  const problem = storePathBaseNameProblem(base);
  if (problem !== undefined) {
    throw new CairnError('INVALID_STORE_PATH', `Cannot parse store path: ${problem} (${path})`);
  }
  return { path, hashPart: base.slice(0, HASH_PART_LENGTH), name: base.slice(HASH_PART_LENGTH + 1) };
}

/** Parses a store path base name (`<hash>-<name>`, as narinfo `References` lists them). */
export function parseStorePathBaseName(base: string): StorePath {
  return parseStorePath(`${STORE_DIR}/${base}`);
}

/** True when `path` is a valid store path. */
export function isStorePath(path: string): boolean {
  try {
    parseStorePath(path);
    return true;
  } catch {
    return false;
  }
}

/** A package name and version, as split from a store path name. */
export interface PackageName {
  /** The package name, such as `python3` or `nixos-system-web1`. */
  readonly pname: string;
  /** The version, such as `3.11.7` or `6.6.1-modules`; empty when the name has none. */
  readonly version: string;
}

/**
 * Splits a store path name into package name and version as `builtins.parseDrvName`,
 * `nvd` and `nix-diff` do: the name ends at the first dash not followed by a letter.
 * `linux-6.6.1-modules` gives `linux` and `6.6.1-modules`; nvd shows such outputs as
 * further versions of one package.
 */
export function splitPackageName(name: string): PackageName {
  for (let i = 0; i < name.length - 1; i++) {
    if (name[i] === '-' && !/[A-Za-z]/.test(name[i + 1]!)) {
      return { pname: name.slice(0, i), version: name.slice(i + 1) };
    }
  }
  return { pname: name, version: '' };
}
