import { readFile } from 'node:fs/promises';
import { userInfo } from 'node:os';
import { join } from 'node:path';
import type { ProfileKind } from '../protocol/agent-protocol.ts';
import { isDeprecatedStub, isExecutable } from './profile-kind.ts';

/** The commands that activate a store path, run in order until one fails, with their environment. */
export interface ActivationPlan {
  readonly commands: ReadonlyArray<{ readonly label: string; readonly argv: readonly string[] }>;
  readonly env: NodeJS.ProcessEnv;
}

/** How activation ended. */
export type ActivationOutcome =
  | {
      readonly ok: true;
      readonly note: string | null;
      /** The activation itself said the machine must reboot (NixOS exit 100). */
      readonly rebootRequired?: boolean;
    }
  | { readonly ok: false; readonly reason: string };

/**
 * What activating a store path of this kind takes (see shared/reference/activation.md):
 * NixOS `bin/switch-to-configuration switch`; nix-darwin `activate-user` (unless missing or the
 * deprecation stub) then `activate`, as root with root's HOME; Home Manager `activate` as the
 * user (with `--driver-version 1` where the script knows it); a plain profile its `bin/activate`
 * if it has one, else nothing.
 */
export async function activationPlan(
  storePath: string,
  kind: ProfileKind,
  env: NodeJS.ProcessEnv,
): Promise<ActivationPlan> {
  switch (kind) {
    case 'nixos':
      return {
        commands: [
          {
            label: 'switch-to-configuration',
            argv: [join(storePath, 'bin/switch-to-configuration'), 'switch'],
          },
        ],
        env,
      };
    case 'nix-darwin': {
      const commands: Array<{ label: string; argv: string[] }> = [];
      const user = join(storePath, 'activate-user');
      if ((await isExecutable(user)) && !(await isDeprecatedStub(user)))
        commands.push({ label: 'activate-user', argv: [user] });
      commands.push({ label: 'activate', argv: [join(storePath, 'activate')] });
      // Root's home from the user database, not an inherited $HOME (sudo keeps the caller's),
      // as darwin-rebuild runs activation with HOME set to the owner of the process.
      return { commands, env: { ...env, HOME: userInfo().homedir } };
    }
    case 'home-manager': {
      const me = userInfo();
      const script = join(storePath, 'activate');
      const text = await readFile(script, 'utf8').catch(() => '');
      const args = text.includes('--driver-version') ? ['--driver-version', '1'] : [];
      return {
        commands: [{ label: 'activate', argv: [script, ...args] }],
        env: { ...env, USER: me.username, HOME: me.homedir },
      };
    }
    case 'plain': {
      const script = join(storePath, 'bin/activate');
      return {
        commands: (await isExecutable(script)) ? [{ label: 'bin/activate', argv: [script] }] : [],
        env,
      };
    }
  }
}

/**
 * What an activation's exit status means. For NixOS, 4 (some units failed, the system switched)
 * follows the deployment's policy and 100 (reboot required) is a success with a note.
 */
export function interpretActivation(
  kind: ProfileKind,
  status: { code: number; label: string; lastLine: string | undefined },
  exit4: 'fail' | 'tolerate',
): ActivationOutcome {
  const { code, label, lastLine } = status;
  if (code === 0) return { ok: true, note: null };
  if (kind === 'nixos' && code === 4) {
    if (exit4 === 'tolerate')
      return { ok: true, note: 'some units failed (exit 4); tolerated by the exit-4 policy' };
    return {
      ok: false,
      reason: 'switch-to-configuration exited with 4: the system switched but some units failed',
    };
  }
  if (kind === 'nixos' && code === 100)
    return { ok: true, note: 'reboot required: the init system changed (exit 100)', rebootRequired: true };
  return { ok: false, reason: `${label} exited with ${code}${lastLine ? `: ${lastLine}` : ''}` };
}
