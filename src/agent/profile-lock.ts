import { mkdir, open, readFile, rm } from 'node:fs/promises';
import { dirname } from 'node:path';
import { CairnError } from '../lib/cairn-error.ts';
import { processAlive } from '../lib/process-alive.ts';

/**
 * Takes the lock that lets only one agent process manage a profile: `<profile>.cairn-agent.lock`
 * beside the profile (so two agents with different state dirs still exclude each other), holding
 * the owner's pid, created exclusively. A lock left by a process that died is taken over.
 * Returns the function that releases it.
 * @throws CairnError ALREADY_EXISTS when a live agent holds it.
 */
export async function lockProfile(profile: string): Promise<() => Promise<void>> {
  await mkdir(dirname(profile), { recursive: true });
  const file = `${profile}.cairn-agent.lock`;
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const handle = await open(file, 'wx', 0o600);
      await handle.writeFile(`${process.pid}\n${profile}\n`);
      await handle.close();
      return async () => {
        await rm(file, { force: true });
      };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      const pid = Number((await readFile(file, 'utf8').catch(() => '')).split('\n')[0]);
      if (Number.isInteger(pid) && pid > 0 && pid !== process.pid && processAlive(pid)) {
        throw new CairnError(
          'ALREADY_EXISTS',
          `Cannot start the agent: another cairn agent (pid ${pid}) manages profile ${profile}; stop it first`,
        );
      }
      await rm(file, { force: true });
    }
  }
  throw new CairnError(
    'INTERNAL',
    `Cannot lock profile ${profile}: the lock file keeps reappearing (${file})`,
  );
}
