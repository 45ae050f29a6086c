import { setTimeout as sleep } from 'node:timers/promises';
import { CairnError } from '../lib/cairn-error.ts';
import { AgentDaemon, type AgentOptions } from './agent-daemon.ts';
import { agentLockHolder } from './agent-lock.ts';
import { darwinPrimaryUser } from './darwin.ts';
import { healthHttpPolicy } from './health-checks.ts';
import { homeManagerBackupExt } from './home-manager.ts';
import { preSwitchPolicy } from './pre-switch-policy.ts';
import { lockProfile } from './profile-lock.ts';
import { resolveProfilePath } from './profile-state.ts';
import { RESTART_EXIT_CODE } from './self-upgrade.ts';
import { forcedSpecialisation } from './specialisation.ts';

/** How often a bootstrapping agent looks whether the deployed system's agent took its lock. */
const HANDOVER_POLL_MS = 200;

/** The agent's options, and for `--bootstrap` how long to wait for the deployed system's agent. */
export interface RunAgentOptions extends Omit<AgentOptions, 'bootstrap'> {
  readonly bootstrap?: { readonly handoverMs: number };
}

/**
 * Runs the agent until `signal` aborts: resolves `options.profile` (a name under
 * /nix/var/nix/profiles, or an absolute path), takes the profile's lock, and releases it when
 * the agent stops. Resolves with the exit code: 0, or {@link RESTART_EXIT_CODE} when the agent
 * stopped to be restarted as its new version.
 *
 * With `bootstrap` (the first install of a machine whose configuration runs its own agent), the
 * agent stops once its first deployment succeeded, lets go of its locks, and resolves with 0 as
 * soon as another agent process holds the agent's lock; when none does within
 * `bootstrap.handoverMs`, it takes its locks again and goes on as an ordinary agent.
 * @throws CairnError INVALID_ARGUMENT for a bad profile name or setting, ALREADY_EXISTS when another agent holds the lock.
 */
export async function runAgent(options: RunAgentOptions, signal: AbortSignal): Promise<number> {
  preSwitchPolicy(options.env);
  homeManagerBackupExt(options.env);
  darwinPrimaryUser(options.env);
  forcedSpecialisation(options.env);
  healthHttpPolicy(options.env);
  const profile = resolveProfilePath(options.profile);
  let bootstrap = options.bootstrap;
  for (;;) {
    let round: { code: number; bootstrapped: boolean };
    try {
      round = await runOnce({ ...options, profile, bootstrap: bootstrap !== undefined }, signal);
    } catch (err) {
      // After a bootstrap's wait: the deployed system's agent took over in the moment since.
      if (options.bootstrap && bootstrap === undefined && isLockRefusal(err)) return 0;
      throw err;
    }
    if (!round.bootstrapped || bootstrap === undefined) return round.code;
    const seconds = Math.round(bootstrap.handoverMs / 1000);
    options.log(
      `bootstrap: waiting up to ${seconds}s for the deployed system's agent to take the agent's lock`,
    );
    const holder = await handedOver(options, bootstrap.handoverMs, signal);
    if (holder !== undefined) {
      options.log(`bootstrap: done; agent process ${holder} holds the agent's lock and takes over`);
      return 0;
    }
    if (signal.aborted) return 0;
    options.log(`bootstrap: no other agent took over within ${seconds}s; going on as this machine's agent`);
    bootstrap = undefined;
  }
}

/** One run of the agent under the profile's lock; its exit code and whether it stopped bootstrapped. */
async function runOnce(
  options: AgentOptions,
  signal: AbortSignal,
): Promise<{ code: number; bootstrapped: boolean }> {
  const unlock = await lockProfile(options.profile);
  try {
    // The program the agent was started as: the script Node runs (see self-upgrade.ts).
    const daemon = new AgentDaemon({ program: process.argv[1], ...options });
    const restart = await daemon.run(signal);
    return { code: restart === undefined ? 0 : RESTART_EXIT_CODE, bootstrapped: daemon.bootstrapped };
  } finally {
    await unlock();
  }
}

const isLockRefusal = (err: unknown) => err instanceof CairnError && err.code === 'ALREADY_EXISTS';

/** Waits until another live agent process holds the agent's name lock; its pid, or undefined. */
async function handedOver(
  options: Pick<AgentOptions, 'name' | 'env'>,
  waitMs: number,
  signal: AbortSignal,
): Promise<number | undefined> {
  const until = Date.now() + waitMs;
  for (;;) {
    const holder = await agentLockHolder(options.name, options.env);
    if (holder !== undefined || signal.aborted || Date.now() >= until) return holder;
    await sleep(HANDOVER_POLL_MS, undefined, { signal }).catch(() => undefined);
  }
}
