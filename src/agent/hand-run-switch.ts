import { runLines } from '../lib/run-lines.ts';

/**
 * The transient unit `nixos-rebuild` runs `switch-to-configuration` in
 * (`SWITCH_TO_CONFIGURATION_CMD_PREFIX` in nixos-rebuild-ng's nix.py); newer versions append
 * `-<random>` to it. The pattern matches both.
 */
export const NIXOS_REBUILD_UNIT_PATTERN = 'nixos-rebuild-switch-to-configuration*';

const RUNNING = new Set(['active', 'activating', 'deactivating', 'reloading']);

/**
 * The `nixos-rebuild` switch units running now (empty when none), from `systemctl list-units
 * --plain --no-legend 'nixos-rebuild-switch-to-configuration*'`. Throws when systemctl fails:
 * the caller cannot tell whether a hand-run switch is running.
 */
export async function handRunSwitches(env: NodeJS.ProcessEnv): Promise<string[]> {
  const r = await runLines(
    'systemctl',
    ['list-units', '--plain', '--no-legend', '--full', '--', NIXOS_REBUILD_UNIT_PATTERN],
    { env, onLine: () => {} },
  );
  if (r.code !== 0)
    throw new Error(
      `Cannot tell whether nixos-rebuild is switching this machine: systemctl list-units exited with ${
        r.code ?? r.signal
      }${r.tail.length ? `: ${r.tail.at(-1)}` : ''}`,
    );
  // "UNIT LOAD ACTIVE SUB DESCRIPTION"
  return r.tail
    .map((l) => l.trim().split(/\s+/))
    .filter(
      (cols) => cols[0]?.startsWith('nixos-rebuild-switch-to-configuration') && RUNNING.has(cols[2] ?? ''),
    )
    .map((cols) => cols[0]!);
}
