import { access, constants, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { CairnError } from '../lib/cairn-error.ts';
import type { ProfileKind } from '../protocol/agent-protocol.ts';

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch {
    return false;
  }
}

/** True when `path` is a file this process may execute. */
export async function isExecutable(path: string): Promise<boolean> {
  try {
    await access(path, constants.X_OK);
    return (await stat(path)).isFile();
  } catch {
    return false;
  }
}

/**
 * Detects what a store path activates as, from its contents (see shared/reference/activation.md):
 * NixOS has `nixos-version` and `bin/switch-to-configuration`; nix-darwin `darwin-version[.json]`
 * and `activate`; Home Manager `hm-version` and `activate`; anything else is a plain profile.
 * @throws CairnError INVALID_ARGUMENT for a path that looks like NixOS but lacks half of it.
 */
export async function detectProfileKind(storePath: string): Promise<ProfileKind> {
  const has = (rel: string) => exists(join(storePath, rel));
  const switchScript = await has('bin/switch-to-configuration');
  if (await has('nixos-version')) {
    if (!switchScript) {
      throw new CairnError(
        'INVALID_ARGUMENT',
        `Cannot activate ${storePath}: it has nixos-version but no bin/switch-to-configuration`,
      );
    }
    return 'nixos';
  }
  if (switchScript) {
    throw new CairnError(
      'INVALID_ARGUMENT',
      `Cannot activate ${storePath}: it has bin/switch-to-configuration but no nixos-version`,
    );
  }
  if (((await has('darwin-version')) || (await has('darwin-version.json'))) && (await has('activate')))
    return 'nix-darwin';
  if ((await has('hm-version')) && (await has('activate'))) return 'home-manager';
  return 'plain';
}
