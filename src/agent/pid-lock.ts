import { mkdir, open, readFile, rm } from 'node:fs/promises';
import { dirname } from 'node:path';
import { CairnError } from '../lib/cairn-error.ts';
import { processAlive } from '../lib/process-alive.ts';

/**
 * Takes a lock file that names its owner: created exclusively, holding the owner's pid and then
 * `lines` (what the lock is for). A lock left by a process that died is taken over. Returns the
 * function that releases it. `refusal` words the error when a live process holds it.
 * @throws CairnError ALREADY_EXISTS when a live process holds it.
 */
export async function takePidLock(
  file: string,
  options: { readonly lines: readonly string[]; readonly refusal: (pid: number) => string },
): Promise<() => Promise<void>> {
  await mkdir(dirname(file), { recursive: true, mode: 0o700 });
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const handle = await open(file, 'wx', 0o600);
      await handle.writeFile(`${[process.pid, ...options.lines].join('\n')}\n`);
      await handle.close();
      return async () => {
        await rm(file, { force: true });
      };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      const pid = Number((await readFile(file, 'utf8').catch(() => '')).split('\n')[0]);
      if (Number.isInteger(pid) && pid > 0 && pid !== process.pid && processAlive(pid)) {
        throw new CairnError('ALREADY_EXISTS', options.refusal(pid));
      }
      await rm(file, { force: true });
    }
  }
  throw new CairnError('INTERNAL', `Cannot take the lock: the lock file keeps reappearing (${file})`);
}
