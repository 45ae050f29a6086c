import { AgentDaemon, type AgentOptions } from './agent-daemon.ts';
import { darwinPrimaryUser } from './darwin.ts';
import { healthHttpPolicy } from './health-checks.ts';
import { homeManagerBackupExt } from './home-manager.ts';
import { preSwitchPolicy } from './pre-switch-policy.ts';
import { lockProfile } from './profile-lock.ts';
import { resolveProfilePath } from './profile-state.ts';
import { RESTART_EXIT_CODE } from './self-upgrade.ts';
import { forcedSpecialisation } from './specialisation.ts';

/**
 * Runs the agent until `signal` aborts: resolves `options.profile` (a name under
 * /nix/var/nix/profiles, or an absolute path), takes the profile's lock, and releases it when
 * the agent stops. Resolves with the exit code: 0, or {@link RESTART_EXIT_CODE} when the agent
 * stopped to be restarted as its new version.
 * @throws CairnError INVALID_ARGUMENT for a bad profile name or setting, ALREADY_EXISTS when another agent holds the lock.
 */
export async function runAgent(options: AgentOptions, signal: AbortSignal): Promise<number> {
  preSwitchPolicy(options.env);
  homeManagerBackupExt(options.env);
  darwinPrimaryUser(options.env);
  forcedSpecialisation(options.env);
  healthHttpPolicy(options.env);
  const profile = resolveProfilePath(options.profile);
  const unlock = await lockProfile(profile);
  try {
    // The program the agent was started as: the script Node runs (see self-upgrade.ts).
    const restart = await new AgentDaemon({ program: process.argv[1], ...options, profile }).run(signal);
    return restart === undefined ? 0 : RESTART_EXIT_CODE;
  } finally {
    await unlock();
  }
}
