import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, existsSync } from 'node:fs';
import { readdir, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import SqliteDatabase from 'better-sqlite3';
import { CairnError } from '../../lib/cairn-error.ts';
import { tarEnd, tarHeader, tarPadding } from '../../lib/tar-archive.ts';
import { CAIRN_VERSION } from '../../lib/version.ts';
import {
  BACKUP_FORMAT_VERSION,
  BACKUP_MANIFEST,
  BACKUP_ROOT,
  type BackupManifest,
} from '../../protocol/backup-manifest.ts';
import type { BlobStoreConfig } from '../blob/blob-store-config.ts';

/** What a backup is made of: the server's data dir, database and blob store. */
export interface BackupSource {
  readonly dataDir: string;
  readonly blobStore: BlobStoreConfig;
  /** SQLite's online backup into a file; undefined on PostgreSQL. */
  readonly backupDatabase: ((file: string) => Promise<void>) | undefined;
}

/**
 * Takes a consistent snapshot of the database now (before the answer starts, so that a failure
 * is an error answer), and returns the backup archive as a stream of chunks: the database, the
 * admin token file, the list of NAR files the database refers to, the local blob store when
 * `includeStore`, and last the manifest with every member's size and SHA-256.
 * @throws CairnError NOT_SUPPORTED on PostgreSQL, or for `includeStore` with an S3 bucket.
 */
export async function writeBackup(
  source: BackupSource,
  options: { includeStore: boolean; now: number },
): Promise<AsyncGenerator<Buffer>> {
  if (source.backupDatabase === undefined) {
    throw new CairnError(
      'NOT_SUPPORTED',
      'Cannot back up the server: its database is PostgreSQL; back it up with pg_dump (pg_dump --format=custom --file=cairn.dump DATABASE_URL) and restore it with pg_restore, as docs/backup.md says',
    );
  }
  if (options.includeStore && source.blobStore.kind !== 'local') {
    throw new CairnError(
      'NOT_SUPPORTED',
      'Cannot back up the blob store: it is an S3 bucket; copy the bucket (or turn on its versioning) instead, and leave out --include-store',
    );
  }
  const snapshot = join(source.dataDir, `.backup-${randomBytes(6).toString('hex')}.sqlite`);
  try {
    await source.backupDatabase(snapshot);
    const facts = readSnapshot(snapshot);
    return archive(source, snapshot, facts, options);
  } catch (err) {
    await rm(snapshot, { force: true });
    throw err;
  }
}

/** Snapshot files of backups in progress, in the data dir. */
const SNAPSHOT = /^\.backup-[0-9a-f]{12}\.sqlite$/;

/**
 * Removes the snapshots of backups a stopped server left in its data dir (a backup's answer
 * that was never read, the process killed while it streamed); each is as large as the database.
 */
export async function removeLeftoverSnapshots(dataDir: string): Promise<void> {
  for (const name of await readdir(dataDir)) {
    if (SNAPSHOT.test(name)) await rm(join(dataDir, name), { force: true });
  }
}

interface SnapshotFacts {
  readonly serverId: string;
  readonly schemaVersion: number;
  readonly storeObjects: string;
  readonly count: number;
  readonly bytes: number;
}

/** What the manifest says of the snapshot, read from the snapshot itself. */
function readSnapshot(file: string): SnapshotFacts {
  const db = new SqliteDatabase(file, { readonly: true });
  try {
    const identity = db.prepare('select server_id from server_identity where id = 1').get() as
      | { server_id: string }
      | undefined;
    if (!identity) throw new Error('Cannot back up the server: its database has no server identity');
    const names = db.prepare('select name from kysely_migration').all() as Array<{ name: string }>;
    const schemaVersion = Math.max(...names.map((n) => Number(/^\d+/.exec(n.name)?.[0] ?? 0)));
    const rows = db
      .prepare('select cache_id, file_name, file_size, file_hash from nar_files order by cache_id, file_name')
      .all() as Array<{ cache_id: number; file_name: string; file_size: number; file_hash: string }>;
    const lines = rows.map(
      (r) => `caches/${r.cache_id}/nar/${r.file_name}\t${r.file_size}\t${r.file_hash}\n`,
    );
    return {
      serverId: identity.server_id,
      schemaVersion,
      storeObjects: `# key\tbytes\tsha256 of the file\n${lines.join('')}`,
      count: rows.length,
      bytes: rows.reduce((sum, r) => sum + r.file_size, 0),
    };
  } finally {
    db.close();
  }
}

async function* archive(
  source: BackupSource,
  snapshot: string,
  facts: SnapshotFacts,
  options: { includeStore: boolean; now: number },
): AsyncGenerator<Buffer> {
  const members: BackupManifest['members'] = [];
  const now = options.now;
  async function* file(name: string, path: string): AsyncGenerator<Buffer> {
    const { size } = await stat(path);
    yield tarHeader(name, size, now);
    const hash = createHash('sha256');
    let got = 0;
    for await (const chunk of createReadStream(path) as AsyncIterable<Buffer>) {
      got += chunk.length;
      // A file that grew would spill into the next header: cut it at its size, and fail below.
      if (got > size) break;
      hash.update(chunk);
      yield chunk;
    }
    if (got !== size) throw new Error(`Cannot back up ${path}: it changed size while it was read`);
    yield tarPadding(size);
    members.push({ name, size, sha256: hash.digest('hex') });
  }
  function* text(name: string, body: string): Generator<Buffer> {
    const bytes = Buffer.from(body, 'utf8');
    yield tarHeader(name, bytes.length, now);
    yield bytes;
    yield tarPadding(bytes.length);
    members.push({ name, size: bytes.length, sha256: createHash('sha256').update(bytes).digest('hex') });
  }
  try {
    yield* file(`${BACKUP_ROOT}/database.sqlite`, snapshot);
    await rm(snapshot, { force: true });
    const adminToken = join(source.dataDir, 'admin-token');
    if (existsSync(adminToken)) yield* file(`${BACKUP_ROOT}/admin-token`, adminToken);
    yield* text(`${BACKUP_ROOT}/store-objects.tsv`, facts.storeObjects);
    if (options.includeStore && source.blobStore.kind === 'local') {
      for (const rel of await blobFiles(source.blobStore.dir)) {
        yield* file(`${BACKUP_ROOT}/blobs/${rel}`, join(source.blobStore.dir, rel));
      }
    }
    const manifest: BackupManifest = {
      format: 'cairn-backup',
      version: BACKUP_FORMAT_VERSION,
      createdAt: new Date(now).toISOString(),
      cairnVersion: CAIRN_VERSION,
      serverId: facts.serverId,
      schemaVersion: facts.schemaVersion,
      store:
        source.blobStore.kind === 'local'
          ? { kind: 'local', included: options.includeStore }
          : { kind: 's3', included: false, location: s3Location(source.blobStore) },
      storeObjects: { count: facts.count, bytes: facts.bytes },
      members,
    };
    const body = Buffer.from(`${JSON.stringify(manifest, null, 2)}\n`, 'utf8');
    yield tarHeader(BACKUP_MANIFEST, body.length, now);
    yield body;
    yield tarPadding(body.length);
    yield tarEnd();
  } finally {
    await rm(snapshot, { force: true });
  }
}

/** The committed blobs under `dir`, relative, sorted; the writers' `.tmp/` is left out. */
async function blobFiles(dir: string): Promise<string[]> {
  let entries: import('node:fs').Dirent[];
  try {
    entries = await readdir(dir, { withFileTypes: true, recursive: true });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
  return entries
    .filter((e) => e.isFile())
    .map((e) => join(e.parentPath ?? e.path, e.name).slice(dir.length + 1))
    .filter((rel) => !rel.startsWith('.tmp/'))
    .sort();
}

function s3Location(c: Extract<BlobStoreConfig, { kind: 's3' }>): string {
  const params = new URLSearchParams({ region: c.region });
  if (c.endpoint !== undefined) params.set('endpoint', c.endpoint);
  if (c.pathStyle) params.set('path-style', 'true');
  // As --blob-store takes it: the prefix without the slash the config adds.
  const prefix = c.prefix.replace(/\/$/, '');
  return `s3://${c.bucket}${prefix === '' ? '' : `/${prefix}`}?${params}`;
}
