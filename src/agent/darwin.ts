import { access, constants, readFile } from 'node:fs/promises';
import { userInfo } from 'node:os';
import { delimiter, join } from 'node:path';
import { CairnError } from '../lib/cairn-error.ts';
import { isExecutable } from './profile-kind.ts';

/**
 * The line nix-darwin puts in the `activate-user` it still ships for compatibility since user
 * activation moved into `activate` (nix-darwin 25.05); `darwin-rebuild` skips a script that has it
 * (`grep -q '^# nix-darwin: deprecated$'`), and so does the agent.
 */
export const DEPRECATED_ACTIVATE_USER = '# nix-darwin: deprecated';

/** True when a nix-darwin `activate-user` has the deprecation marker line: it must not run. */
export async function isDeprecatedStub(path: string): Promise<boolean> {
  const text = await readFile(path, 'utf8').catch(() => '');
  return text.split('\n').some((line) => line === DEPRECATED_ACTIVATE_USER);
}

/** A user name as macOS and Linux accept it. */
const USER_NAME = /^[A-Za-z_][A-Za-z0-9_.-]*$/;

/**
 * The user a legacy nix-darwin `activate-user` runs as: `CAIRN_AGENT_PRIMARY_USER` in the agent's
 * environment (the nix-darwin module sets it from `system.primaryUser`), or undefined.
 * @throws CairnError INVALID_ARGUMENT for a value that is not a user name.
 */
export function darwinPrimaryUser(env: NodeJS.ProcessEnv): string | undefined {
  const value = env.CAIRN_AGENT_PRIMARY_USER;
  if (value === undefined || value === '') return undefined;
  if (!USER_NAME.test(value))
    throw new CairnError(
      'INVALID_ARGUMENT',
      `Cannot start the agent: CAIRN_AGENT_PRIMARY_USER must be a user name, not ${JSON.stringify(value)}`,
    );
  return value;
}

async function onPath(env: NodeJS.ProcessEnv, name: string): Promise<string | undefined> {
  for (const dir of (env.PATH ?? '').split(delimiter).filter(Boolean)) {
    const candidate = join(dir, name);
    if (
      await access(candidate, constants.X_OK).then(
        () => true,
        () => false,
      )
    )
      return candidate;
  }
  return undefined;
}

/**
 * How to run a nix-darwin closure's `activate-user`, as `darwin-rebuild` does: not at all when it
 * is missing or the deprecation stub (null); as the primary user otherwise, directly when the
 * agent runs as that user, else with `sudo --user=USER --set-home` (the agent runs as root).
 * When it cannot run it that way, `refusal` says why, for the user to read.
 */
export async function activateUserCommand(
  storePath: string,
  env: NodeJS.ProcessEnv,
): Promise<{ argv: string[] } | { refusal: string } | null> {
  const script = join(storePath, 'activate-user');
  if (!(await isExecutable(script)) || (await isDeprecatedStub(script))) return null;
  const why = `Cannot activate ${storePath}: its activate-user is a legacy one (nix-darwin before 25.05, without the line "${DEPRECATED_ACTIVATE_USER}"), which must run as the machine's primary user, as darwin-rebuild runs it with sudo --user`;
  const user = darwinPrimaryUser(env);
  if (user === undefined)
    return { refusal: `${why}; set CAIRN_AGENT_PRIMARY_USER (the module's primaryUser) to that user` };
  const me = userInfo();
  if (user === me.username) return { argv: [script] };
  if (me.uid !== 0) return { refusal: `${why}; the agent runs as ${me.username}, not as ${user} or root` };
  const sudo = await onPath(env, 'sudo');
  if (!sudo) return { refusal: `${why}; the agent finds no sudo on its PATH to run it as ${user}` };
  return { argv: [sudo, '--non-interactive', `--user=${user}`, '--set-home', '--', script] };
}
