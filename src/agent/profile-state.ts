import { readlink, realpath } from 'node:fs/promises';
import { isAbsolute, join } from 'node:path';
import { CairnError } from '../lib/cairn-error.ts';
import { isStorePath } from '../nix/store-path.ts';

/** Where named profiles live. */
export const PROFILES_DIR = '/nix/var/nix/profiles';

/** Resolves `cairn deploy agent NAME [PROFILE]`'s PROFILE: a name under {@link PROFILES_DIR} or an absolute path. */
export function resolveProfilePath(profile: string): string {
  if (isAbsolute(profile)) return profile;
  if (
    !/^[A-Za-z0-9][A-Za-z0-9._+-]*(\/[A-Za-z0-9][A-Za-z0-9._+-]*)*$/.test(profile) ||
    profile.split('/').includes('..')
  ) {
    throw new CairnError(
      'INVALID_ARGUMENT',
      `Cannot use profile: expected a name under ${PROFILES_DIR} (such as system or per-user/alice/home-manager) or an absolute path (${profile})`,
    );
  }
  return join(PROFILES_DIR, profile);
}

/** What a profile points at now. */
export interface ProfileState {
  /** The store path the profile resolves to, or null when it does not exist yet. */
  readonly storePath: string | null;
  /** The generation number, from the `<profile>-<N>-link` it points at, or null. */
  readonly generation: number | null;
}

/** Reads a profile's current store path and generation without changing anything. */
export async function readProfileState(profile: string): Promise<ProfileState> {
  let link: string;
  try {
    link = await readlink(profile);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return { storePath: null, generation: null };
    throw new CairnError('INVALID_ARGUMENT', `Cannot read profile ${profile}: ${(err as Error).message}`, {
      cause: err,
    });
  }
  const m = /-(\d+)-link$/.exec(link);
  const target = await realpath(profile);
  if (!isStorePath(target)) {
    throw new CairnError(
      'INVALID_ARGUMENT',
      `Cannot read profile ${profile}: it resolves to ${target}, not a store path`,
    );
  }
  return { storePath: target, generation: m ? Number(m[1]) : null };
}
