import { stat } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';

/**
 * Older agents kept their state directly in the base directory, shared by every agent of the
 * machine. Which agent it belonged to cannot be known, so it is left in place, unused.
 */
export async function warnOfSharedState(
  stateDir: string,
  name: string,
  log: (line: string) => void,
): Promise<void> {
  const base = dirname(stateDir);
  if (basename(stateDir) !== name) return;
  const old = await stat(join(base, 'journal.json')).catch(() => null);
  if (old?.isFile())
    log(`WARNING: found state of an older agent in ${base}; not used; remove it once no older agent runs`);
}
