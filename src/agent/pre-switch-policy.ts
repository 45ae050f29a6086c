import { CairnError } from '../lib/cairn-error.ts';

/**
 * What the agent does when NixOS's pre-switch checks refuse a live switch (exit 1 after
 * "Pre-switch checks failed", e.g. the D-Bus implementation changed): `fail` (the default) rolls
 * the deployment back; `boot` installs the new configuration for the next boot with
 * `switch-to-configuration boot` and reports that a reboot is required. Set with
 * `CAIRN_AGENT_PRE_SWITCH_CHECKS=fail|boot` in the agent's environment.
 * @throws CairnError INVALID_ARGUMENT for any other value.
 */
export function preSwitchPolicy(env: NodeJS.ProcessEnv): 'fail' | 'boot' {
  const value = env.CAIRN_AGENT_PRE_SWITCH_CHECKS;
  if (value === undefined || value === '' || value === 'fail') return 'fail';
  if (value === 'boot') return 'boot';
  throw new CairnError(
    'INVALID_ARGUMENT',
    `Cannot start the agent: CAIRN_AGENT_PRE_SWITCH_CHECKS must be "fail" or "boot", not ${JSON.stringify(value)}`,
  );
}
