import { createHash } from 'node:crypto';
import { type FileHandle, open } from 'node:fs/promises';
import { CairnError } from '../lib/cairn-error.ts';
import { readTarEntries, readTarEntry, type TarEntry, TarFormatError } from '../lib/tar-archive.ts';
import {
  BACKUP_MANIFEST,
  BACKUP_ROOT,
  type BackupManifest,
  backupManifestSchema,
} from '../protocol/backup-manifest.ts';

/** Names a backup member may have: nothing outside the archive's folder, no `..`. */
const MEMBER_NAME = new RegExp(
  `^${BACKUP_ROOT}/(database\\.sqlite|admin-token|store-objects\\.tsv|blobs/[A-Za-z0-9._+=!:-]+(/[A-Za-z0-9._+=!:-]+)*)$`,
);

/** A backup that was read in full and matches its manifest. */
export interface VerifiedBackup {
  readonly manifest: BackupManifest;
  /** Every member but the manifest, in order. */
  readonly entries: readonly TarEntry[];
}

/**
 * Reads the whole backup archive and checks it against its manifest: every member there, of
 * its size and SHA-256, the manifest last, the end marker after it. Writes nothing.
 * @throws CairnError INVALID_BACKUP naming the first fault found.
 */
export async function verifyBackup(file: string): Promise<VerifiedBackup> {
  let handle: FileHandle;
  try {
    handle = await open(file, 'r');
  } catch (err) {
    throw new CairnError(
      'INVALID_ARGUMENT',
      `Cannot read the backup: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message} (${file})`,
    );
  }
  try {
    return await verifyOpen(handle, file);
  } finally {
    await handle.close();
  }
}

async function verifyOpen(handle: FileHandle, file: string): Promise<VerifiedBackup> {
  const fail = (what: string) => new CairnError('INVALID_BACKUP', `Cannot use the backup: ${what} (${file})`);
  const { size } = await handle.stat();
  const entries: TarEntry[] = [];
  const hashes = new Map<string, string>();
  let manifestEntry: TarEntry | undefined;
  try {
    for await (const entry of readTarEntries(handle, size)) {
      if (manifestEntry) throw fail(`a member follows the manifest (${entry.name})`);
      if (entry.name === BACKUP_MANIFEST) {
        manifestEntry = entry;
        continue;
      }
      if (!MEMBER_NAME.test(entry.name) || entry.name.split('/').includes('..')) {
        throw fail(`it holds a member no Cairn backup has (${entry.name.slice(0, 200)})`);
      }
      if (hashes.has(entry.name)) throw fail(`it holds ${entry.name} twice`);
      hashes.set(entry.name, await sha256(handle, entry));
      entries.push(entry);
    }
  } catch (err) {
    if (err instanceof TarFormatError) {
      throw fail(`it is truncated or damaged: ${err.message}${manifestEntry ? '' : ', before its manifest'}`);
    }
    throw err;
  }
  if (!manifestEntry) throw fail('it has no manifest: it is not a Cairn backup, or it was cut short');
  let json: unknown;
  try {
    json = JSON.parse(Buffer.concat(await collect(handle, manifestEntry)).toString('utf8'));
  } catch {
    throw fail('its manifest is not JSON');
  }
  const parsed = backupManifestSchema.safeParse(json);
  if (!parsed.success) {
    throw fail(
      `its manifest is not one this Cairn reads (${parsed.error.issues
        .slice(0, 3)
        .map((i) => `${i.path.join('.') || '(manifest)'}: ${i.message}`)
        .join('; ')})`,
    );
  }
  const manifest = parsed.data;
  const listed = new Map(manifest.members.map((m) => [m.name, m]));
  for (const entry of entries) {
    const m = listed.get(entry.name);
    if (!m) throw fail(`the manifest does not list ${entry.name}`);
    if (m.size !== entry.size)
      throw fail(`${entry.name} is ${entry.size} bytes, the manifest says ${m.size}`);
    if (m.sha256 !== hashes.get(entry.name))
      throw fail(`${entry.name} was altered: its SHA-256 differs from the manifest's`);
  }
  const missing = manifest.members.filter((m) => !hashes.has(m.name));
  if (missing.length > 0)
    throw fail(`members the manifest lists are missing (${missing.map((m) => m.name).join(', ')})`);
  if (!hashes.has(`${BACKUP_ROOT}/database.sqlite`)) throw fail('it holds no database');
  return { manifest, entries };
}

/** The hex SHA-256 of a member's contents. */
export async function sha256(handle: FileHandle, entry: TarEntry): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of readTarEntry(handle, entry)) hash.update(chunk);
  return hash.digest('hex');
}

async function collect(handle: FileHandle, entry: TarEntry): Promise<Buffer[]> {
  if (entry.size > 64 * 1024 * 1024) throw new TarFormatError(`the manifest is ${entry.size} bytes`);
  const chunks: Buffer[] = [];
  for await (const chunk of readTarEntry(handle, entry)) chunks.push(chunk);
  return chunks;
}
