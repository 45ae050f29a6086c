import { readFile } from 'node:fs/promises';
import { homedir, userInfo } from 'node:os';
import { join } from 'node:path';
import { runLines } from '../lib/run-lines.ts';
import type { ProfileKind } from '../protocol/agent-protocol.ts';
import { isDeprecatedStub, isExecutable } from './profile-kind.ts';

/** How activation ended. */
export type ActivationOutcome =
  | { readonly ok: true; readonly note: string | null }
  | { readonly ok: false; readonly reason: string };

/** Options of {@link activateProfile}. */
export interface ActivateOptions {
  readonly onLine: (line: string) => void;
  readonly env: NodeJS.ProcessEnv;
  /** What NixOS's exit code 4 (some units failed, system switched) means. */
  readonly exit4: 'fail' | 'tolerate';
}

/**
 * Activates a store path by its kind. NixOS runs `switch-to-configuration switch` in its own
 * session, so that the agent's service being restarted by the switch cannot kill it; exit 4
 * follows the deployment's policy and 100 (reboot required) counts as success with a note.
 */
export async function activateProfile(
  storePath: string,
  kind: ProfileKind,
  options: ActivateOptions,
): Promise<ActivationOutcome> {
  const run = async (cmd: string, args: string[], env: NodeJS.ProcessEnv = options.env) => {
    options.onLine(`$ ${[cmd, ...args].join(' ')}`);
    return await runLines(cmd, args, { env, onLine: options.onLine, detached: kind === 'nixos' });
  };
  const failed = (what: string, r: { code: number | null; signal: string | null; tail: readonly string[] }) =>
    ({
      ok: false,
      reason: `${what} ${r.signal ? `was killed by ${r.signal}` : `exited with ${r.code}`}${r.tail.length ? `: ${r.tail.at(-1)}` : ''}`,
    }) as const;

  switch (kind) {
    case 'nixos': {
      const r = await run(join(storePath, 'bin/switch-to-configuration'), ['switch']);
      if (r.code === 0) return { ok: true, note: null };
      if (r.code === 4) {
        if (options.exit4 === 'tolerate')
          return { ok: true, note: 'some units failed (exit 4); tolerated by the exit-4 policy' };
        return {
          ok: false,
          reason: 'switch-to-configuration exited with 4: the system switched but some units failed',
        };
      }
      if (r.code === 100) return { ok: true, note: 'reboot required: the init system changed (exit 100)' };
      return failed('switch-to-configuration', r);
    }
    case 'nix-darwin': {
      // Activation runs as root with HOME set to root's home (macOS sudo keeps the caller's).
      const env = { ...options.env, HOME: homedir() };
      const user = join(storePath, 'activate-user');
      if ((await isExecutable(user)) && !(await isDeprecatedStub(user))) {
        const r = await run(user, [], env);
        if (r.code !== 0) return failed('activate-user', r);
      }
      const r = await run(join(storePath, 'activate'), [], env);
      return r.code === 0 ? { ok: true, note: null } : failed('activate', r);
    }
    case 'home-manager': {
      const me = userInfo();
      const env = { ...options.env, USER: me.username, HOME: me.homedir };
      const script = join(storePath, 'activate');
      // From Home Manager 25.11 the caller manages the profile and says so with --driver-version 1.
      const text = await readFile(script, 'utf8').catch(() => '');
      const args = text.includes('--driver-version') ? ['--driver-version', '1'] : [];
      const r = await run(script, args, env);
      return r.code === 0 ? { ok: true, note: null } : failed('activate', r);
    }
    case 'plain': {
      const script = join(storePath, 'bin/activate');
      if (!(await isExecutable(script))) return { ok: true, note: null };
      const r = await run(script, []);
      return r.code === 0 ? { ok: true, note: null } : failed('bin/activate', r);
    }
  }
}
