import { readFile, realpath } from 'node:fs/promises';
import { userInfo } from 'node:os';
import { join } from 'node:path';

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
