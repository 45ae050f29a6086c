import { userInfo } from 'node:os';
import { join } from 'node:path';
import type { ProfileKind } from '../protocol/agent-protocol.ts';
import { childEnv } from './child-env.ts';
import { activateUserCommand } from './darwin.ts';
import { homeManagerGenVersion } from './home-manager.ts';
import { isExecutable } from './profile-kind.ts';

/** The commands that activate a store path, run in order until one fails, with their environment. */
export interface ActivationPlan {
  readonly commands: ReadonlyArray<{ readonly label: string; readonly argv: readonly string[] }>;
  readonly env: NodeJS.ProcessEnv;
}

/** How activation ended. */
export type ActivationOutcome =
  | { readonly ok: true; readonly note: string | null }
  | {
      readonly ok: false;
      readonly reason: string;
      /**
       * NixOS exit 100: the new configuration is the boot default, nothing was activated, the
       * machine runs what it ran before until it reboots.
       */
      readonly nextBoot?: boolean;
      /** NixOS exit 1 after "Pre-switch checks failed": nothing was changed, not even the bootloader. */
      readonly preSwitchChecks?: boolean;
    };

/** What NixOS's `switch-to-configuration` prints to stderr before it exits 1 on a failed pre-switch check. */
export const PRE_SWITCH_CHECKS_FAILED = 'Pre-switch checks failed';

/**
 * What activating a store path of this kind takes (see docs/activation.md):
 * NixOS `bin/switch-to-configuration switch` (or `goal`) with `NIXOS_INSTALL_BOOTLOADER=0`; nix-darwin `activate-user` (unless missing or the
 * deprecation stub) then `activate`, as root with root's HOME; Home Manager `activate` as the
 * user (with `--driver-version 1` for a generation with a `gen-version`); a plain profile its `bin/activate`
 * if it has one, else nothing.
 */
export async function activationPlan(
  storePath: string,
  kind: ProfileKind,
  agentEnv: NodeJS.ProcessEnv,
  goal: 'switch' | 'boot' | 'test' = 'switch',
): Promise<ActivationPlan> {
  // Never the agent's own environment: it holds the agent's token (see child-env.ts).
  const env = childEnv(agentEnv);
  switch (kind) {
    case 'nixos':
      return {
        commands: [
          {
            label: 'switch-to-configuration',
            argv: [join(storePath, 'bin/switch-to-configuration'), goal],
          },
        ],
        // Set either way, as nixos-rebuild does: an inherited 1 would reinstall the bootloader.
        env: { ...env, NIXOS_INSTALL_BOOTLOADER: '0' },
      };
    case 'nix-darwin': {
      const commands: Array<{ label: string; argv: string[] }> = [];
      const user = await activateUserCommand(storePath, agentEnv);
      // Checked before the profile changed; here for a rollback to such a closure.
      if (user && 'refusal' in user)
        commands.push({
          label: 'activate-user',
          argv: ['/bin/sh', '-c', 'echo "$1" >&2; exit 1', 'sh', user.refusal],
        });
      else if (user) commands.push({ label: 'activate-user', argv: user.argv });
      commands.push({ label: 'activate', argv: [join(storePath, 'activate')] });
      // Root's home from the user database, not an inherited $HOME (sudo keeps the caller's),
      // as darwin-rebuild runs activation with HOME set to the owner of the process.
      return { commands, env: { ...env, HOME: userInfo().homedir } };
    }
    case 'home-manager': {
      const me = userInfo();
      const script = join(storePath, 'activate');
      // As `home-manager switch` does: a generation that declares a gen-version leaves the
      // profile to its caller (set before) and is told so; an older one manages it itself.
      const args = (await homeManagerGenVersion(storePath)) >= 1 ? ['--driver-version', '1'] : [];
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
 * follows the deployment's policy; 100 (the init system changed) means the new configuration was
 * installed as the boot default and nothing was activated, which is not a checked success; 1
 * after "Pre-switch checks failed" means the switch was refused before anything changed.
 */
export function interpretActivation(
  kind: ProfileKind,
  status: {
    code: number;
    label: string;
    lastLine: string | undefined;
    tail?: readonly string[];
    unknown?: string;
  },
  exit4: 'fail' | 'tolerate',
): ActivationOutcome {
  const { code, label, lastLine } = status;
  if (status.unknown) return { ok: false, reason: status.unknown };
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
    return {
      ok: false,
      nextBoot: true,
      reason:
        'installed for the next boot; reboot required: the init system changed (exit 100); not activated, health checks not run',
    };
  const tail = status.tail ?? (lastLine ? [lastLine] : []);
  if (kind === 'nixos' && code === 1 && tail.some((l) => l.trim() === PRE_SWITCH_CHECKS_FAILED)) {
    const which = tail.filter((l) => /^Pre-switch check '.*' failed/.test(l.trim())).map((l) => l.trim());
    return {
      ok: false,
      preSwitchChecks: true,
      reason: `switch-to-configuration refused to switch: pre-switch checks failed (exit 1)${
        which.length ? `: ${which.join('; ')}` : ''
      }; nothing was activated and the bootloader was not changed`,
    };
  }
  return { ok: false, reason: `${label} exited with ${code}${lastLine ? `: ${lastLine}` : ''}` };
}
