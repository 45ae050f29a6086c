import { realpath } from 'node:fs/promises';

/**
 * The link to the NixOS system the machine runs: `/run/current-system`, which NixOS's activation
 * points at the system it activates. `CAIRN_AGENT_CURRENT_SYSTEM` names another link instead
 * (tests, and machines whose /run is elsewhere).
 */
export function currentSystemLink(env: NodeJS.ProcessEnv): string {
  return env.CAIRN_AGENT_CURRENT_SYSTEM || '/run/current-system';
}

/**
 * The link to the NixOS system the machine booted: `/run/booted-system`, or the link
 * `CAIRN_AGENT_BOOTED_SYSTEM` names (tests).
 */
export function bootedSystemLink(env: NodeJS.ProcessEnv): string {
  return env.CAIRN_AGENT_BOOTED_SYSTEM || '/run/booted-system';
}

/** The store path of the running NixOS system, or undefined where there is none (not NixOS). */
export async function runningSystem(env: NodeJS.ProcessEnv): Promise<string | undefined> {
  return await realpath(currentSystemLink(env)).catch(() => undefined);
}

/**
 * Whether the running system is `storePath` after a switch to it: null when it is, else what to
 * say. Where there is no running system to look at (not a booted NixOS), there is nothing to
 * compare and the switch's exit code stands.
 */
export async function checkRunningSystem(
  env: NodeJS.ProcessEnv,
  storePath: string,
  exitCode: number,
): Promise<{ ok: true; note: string | null } | { ok: false; reason: string }> {
  const link = currentSystemLink(env);
  const running = await runningSystem(env);
  if (running === undefined)
    return { ok: true, note: `cannot check the switch: ${link} does not exist (not a booted NixOS system)` };
  if (running === storePath) return { ok: true, note: null };
  return {
    ok: false,
    reason: `switch-to-configuration exited with ${exitCode} but ${link} is ${running}, not the new configuration: the switch did not take effect`,
  };
}
