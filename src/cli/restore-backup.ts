import { createHash, randomBytes } from 'node:crypto';
import { chmod, mkdir, open, readdir, rename, rm, rmdir, stat } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { CairnError } from '../lib/cairn-error.ts';
import { readTarEntry } from '../lib/tar-archive.ts';
import { BACKUP_ROOT, type BackupManifest } from '../protocol/backup-manifest.ts';
import { verifyBackup } from './verify-backup.ts';

/** Where each member of a backup goes in the data dir; members not named here are not written. */
function target(name: string): string | undefined {
  const rel = name.slice(BACKUP_ROOT.length + 1);
  if (rel === 'database.sqlite') return 'cairn.sqlite';
  if (rel === 'admin-token') return 'admin-token';
  if (rel.startsWith('blobs/')) return rel;
  return undefined;
}

/** What a restore wrote. */
export interface RestoreSummary {
  readonly manifest: BackupManifest;
  readonly dataDir: string;
  readonly blobs: number;
}

/**
 * Restores a backup into a data dir that does not exist or is empty: the whole file is verified
 * first, then extracted into a folder next to the data dir, checked again as it is written, and
 * renamed into place only when complete, so that a failure at any point leaves nothing behind.
 * @throws CairnError INVALID_ARGUMENT for a non-empty data dir, INVALID_BACKUP for a damaged file.
 */
export async function restoreBackup(file: string, dataDirArg: string): Promise<RestoreSummary> {
  const dataDir = resolve(dataDirArg);
  const existing = await listDir(dataDir);
  if (existing !== undefined && existing.length > 0) {
    throw new CairnError(
      'INVALID_ARGUMENT',
      `Cannot restore into the data dir: it is not empty; restore into a new or empty directory (${dataDir})`,
    );
  }
  const { manifest, entries } = await verifyBackup(file);
  await mkdir(dirname(dataDir), { recursive: true });
  const staging = join(dirname(dataDir), `.${basename(dataDir)}.restoring-${randomBytes(4).toString('hex')}`);
  await mkdir(staging, { mode: 0o700 });
  const handle = await open(file, 'r');
  try {
    let blobs = 0;
    const sums = new Map(manifest.members.map((m) => [m.name, m.sha256]));
    for (const entry of entries) {
      const rel = target(entry.name);
      if (rel === undefined) continue;
      const path = join(staging, rel);
      await mkdir(dirname(path), { recursive: true, mode: 0o700 });
      const out = await open(path, 'wx', 0o600);
      const hash = createHash('sha256');
      try {
        for await (const chunk of readTarEntry(handle, entry)) {
          hash.update(chunk);
          await out.write(chunk);
        }
        await out.sync();
      } finally {
        await out.close();
      }
      await chmod(path, 0o600);
      // The file may have changed since it was verified: what was written is checked too.
      if (hash.digest('hex') !== sums.get(entry.name)) {
        throw new CairnError(
          'INVALID_BACKUP',
          `Cannot restore the backup: ${entry.name} changed while it was restored (${file})`,
        );
      }
      if (rel.startsWith('blobs/')) blobs++;
    }
    if (existing !== undefined) await rmdir(dataDir);
    await rename(staging, dataDir);
    return { manifest, dataDir, blobs };
  } catch (err) {
    await rm(staging, { recursive: true, force: true });
    throw err;
  } finally {
    await handle.close();
  }
}

/** The entries of a directory; undefined when it does not exist. */
async function listDir(dir: string): Promise<string[] | undefined> {
  try {
    if (!(await stat(dir)).isDirectory()) {
      throw new CairnError(
        'INVALID_ARGUMENT',
        `Cannot restore into the data dir: it is not a directory (${dir})`,
      );
    }
    return await readdir(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}
