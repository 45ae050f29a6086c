import { readdir, realpath, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { CairnError } from '../lib/cairn-error.ts';

/** A NixOS specialisation name: one path component. */
const NAME = /^[A-Za-z0-9_][A-Za-z0-9_.+-]*$/;

/**
 * The specialisation every NixOS deployment switches to, `CAIRN_AGENT_SPECIALISATION` in the
 * agent's environment (the NixOS module's `specialisation`), as `nixos-rebuild switch
 * --specialisation NAME`; undefined when unset.
 * @throws CairnError INVALID_ARGUMENT for a value that is not a specialisation name.
 */
export function forcedSpecialisation(env: NodeJS.ProcessEnv): string | undefined {
  const value = env.CAIRN_AGENT_SPECIALISATION;
  if (value === undefined || value === '') return undefined;
  if (!NAME.test(value))
    throw new CairnError(
      'INVALID_ARGUMENT',
      `Cannot start the agent: CAIRN_AGENT_SPECIALISATION must be a specialisation name, not ${JSON.stringify(value)}`,
    );
  return value;
}

/**
 * The specialisation of `system` the machine runs: the name under `system/specialisation/` that
 * resolves to the running system's store path (a specialisation is a system of its own, linked
 * there, and /run/current-system points at it after `switch-to-configuration` of it).
 */
export async function runningSpecialisation(
  system: string | null,
  running: string | undefined,
): Promise<string | undefined> {
  if (!system || !running || system === running) return undefined;
  const names = await readdir(join(system, 'specialisation')).catch(() => [] as string[]);
  for (const name of names.sort())
    if ((await realpath(join(system, 'specialisation', name)).catch(() => undefined)) === running)
      return name;
  return undefined;
}

/**
 * Which specialisation of `storePath` a NixOS deployment switches to, and what to say about it:
 * the forced one (refused when `storePath` lacks it, as nixos-rebuild refuses a missing
 * `--specialisation`); else the one the machine runs, when `storePath` has it too; else the base
 * configuration (null), also when the running specialisation is gone from the new configuration,
 * as a plain `nixos-rebuild switch` does.
 */
export async function chooseSpecialisation(
  storePath: string,
  options: { forced: string | undefined; running: string | undefined },
): Promise<{ name: string | null; note: string | null } | { refusal: string }> {
  const has = async (name: string) =>
    (await stat(join(storePath, 'specialisation', name, 'bin/switch-to-configuration')).catch(() => null)) !==
    null;
  const { forced, running } = options;
  if (forced !== undefined) {
    if (await has(forced))
      return { name: forced, note: `specialisation: ${forced} (CAIRN_AGENT_SPECIALISATION)` };
    return {
      refusal: `Cannot switch to specialisation ${forced} (CAIRN_AGENT_SPECIALISATION): ${storePath} has no specialisation/${forced}; nothing was changed`,
    };
  }
  if (running === undefined) return { name: null, note: null };
  if (await has(running))
    return {
      name: running,
      note: `specialisation: ${running} (the machine runs it, and the new configuration has it)`,
    };
  return {
    name: null,
    note: `the machine runs specialisation ${running}, which the new configuration does not have: switching to its base configuration, as nixos-rebuild switch does`,
  };
}

/** The system to activate: `storePath`, or its specialisation `name` (resolved to its own path). */
export async function specialisationPath(
  storePath: string,
  name: string | null | undefined,
): Promise<string> {
  return name ? await realpath(join(storePath, 'specialisation', name)) : storePath;
}
