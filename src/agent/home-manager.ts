import { readFile, realpath, stat } from 'node:fs/promises';
import { userInfo } from 'node:os';
import { join } from 'node:path';
import { CairnError } from '../lib/cairn-error.ts';
import { type NixContext, setProfile } from './nix-commands.ts';
import { readProfileState } from './profile-state.ts';

/**
 * The generation format a Home Manager generation declares in its `gen-version` file (Home
 * Manager writes `1` there since it moved profile management to the caller), or 0 for a
 * generation without one: its `activate` manages the profile itself, reading the old generation
 * from the profile link and setting the profile to the new one.
 */
export async function homeManagerGenVersion(storePath: string): Promise<number> {
  const text = await readFile(join(storePath, 'gen-version'), 'utf8').catch(() => undefined);
  if (text === undefined) return 0;
  const n = Number(text.trim());
  return Number.isSafeInteger(n) && n > 0 ? n : 0;
}

/**
 * The Home Manager generation the user runs: the target of the `current-home` GC root that
 * activation points at the generation it activated (`$XDG_STATE_HOME/home-manager/gcroots`, or
 * the legacy `/nix/var/nix/gcroots/per-user/$USER`), or undefined when there is none.
 */
export async function homeManagerCurrentGeneration(env: NodeJS.ProcessEnv): Promise<string | undefined> {
  const me = userInfo();
  const state = env.XDG_STATE_HOME || join(me.homedir, '.local/state');
  for (const root of [
    join(state, 'home-manager/gcroots/current-home'),
    join('/nix/var/nix/gcroots/per-user', me.username, 'current-home'),
  ]) {
    const target = await realpath(root).catch(() => undefined);
    if (target) return target;
  }
  return undefined;
}

/**
 * True for a Home Manager generation whose `activate` manages the profile itself (no
 * `gen-version`): it reads the old generation from the profile link, so the agent must not set
 * the profile before running it, and it sets the profile to its own generation.
 */
export async function activateSetsProfile(storePath: string): Promise<boolean> {
  const has = async (rel: string) => (await stat(join(storePath, rel)).catch(() => null)) !== null;
  return (
    (await has('hm-version')) && (await has('activate')) && (await homeManagerGenVersion(storePath)) === 0
  );
}

/** What a Home Manager file-name extension for backups may be: a plain file name part. */
const BACKUP_EXT = /^[A-Za-z0-9][A-Za-z0-9._+-]*$/;

/**
 * Checks `HOME_MANAGER_BACKUP_EXT` in the agent's environment (as `home-manager switch -b EXT`
 * sets it): Home Manager's activation moves a file in the way of one it links to
 * `<file>.<EXT>` instead of failing. Unset or empty: no backups.
 * @throws CairnError INVALID_ARGUMENT for a value that is not a plain extension (a `/` would move
 * files elsewhere).
 */
export function homeManagerBackupExt(env: NodeJS.ProcessEnv): string | undefined {
  const value = env.HOME_MANAGER_BACKUP_EXT;
  if (value === undefined || value === '') return undefined;
  if (!BACKUP_EXT.test(value))
    throw new CairnError(
      'INVALID_ARGUMENT',
      `Cannot start the agent: HOME_MANAGER_BACKUP_EXT must be a file name extension such as backup (letters, digits, '.', '_', '+', '-'), not ${JSON.stringify(value)}`,
    );
  return value;
}

/**
 * After a legacy Home Manager `activate` (one that sets its own profile) succeeded: points the
 * agent's profile at `storePath` when the activation did not (the agent's profile is not the one
 * Home Manager keeps). Resolves with the failure to report, or null.
 */
export async function profileAfterLegacyActivate(
  ctx: NixContext,
  profile: string,
  storePath: string,
): Promise<string | null> {
  if ((await readProfileState(profile)).storePath === storePath) return null;
  const set = await setProfile(ctx, profile, storePath);
  return set.code === 0 ? null : `nix-env --set failed: ${set.tail.at(-1) ?? `exit ${set.code}`}`;
}
