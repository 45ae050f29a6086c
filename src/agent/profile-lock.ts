import { mkdir } from 'node:fs/promises';
import { dirname } from 'node:path';
import { takePidLock } from './pid-lock.ts';

/**
 * Takes the lock that lets only one agent process manage a profile: `<profile>.cairn-agent.lock`
 * beside the profile (so two agents with different state dirs still exclude each other), holding
 * the owner's pid (see {@link takePidLock}). Returns the function that releases it.
 * @throws CairnError ALREADY_EXISTS when a live agent holds it.
 */
export async function lockProfile(profile: string): Promise<() => Promise<void>> {
  // The profile's directory keeps its usual mode; only the lock file is private.
  await mkdir(dirname(profile), { recursive: true });
  return await takePidLock(`${profile}.cairn-agent.lock`, {
    lines: [profile],
    refusal: (pid) =>
      `Cannot start the agent: another cairn agent (pid ${pid}) manages profile ${profile}; stop it first`,
  });
}
