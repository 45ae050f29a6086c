import { z } from 'zod';

/** The version of the backup format this Cairn writes and reads. */
export const BACKUP_FORMAT_VERSION = 1;

/** The folder every member of a backup archive is under. */
export const BACKUP_ROOT = 'cairn-backup';

/** The manifest's name in the archive: its last member. */
export const BACKUP_MANIFEST = `${BACKUP_ROOT}/manifest.json`;

const sha256Hex = z.string().regex(/^[0-9a-f]{64}$/);

/**
 * The last member of a backup archive (`cairn server backup`): what the backup holds, and the
 * size and SHA-256 of every other member, so that restore finds a file cut short or altered
 * before it writes anything.
 */
export const backupManifestSchema = z.strictObject({
  format: z.literal('cairn-backup'),
  version: z.literal(BACKUP_FORMAT_VERSION),
  createdAt: z.iso.datetime(),
  cairnVersion: z.string(),
  /** The server's identity (`server_identity`): agents recognise the restored server by it. */
  serverId: z.string().regex(/^[0-9a-f]{32}$/),
  /** The newest migration the database has. */
  schemaVersion: z.number().int().positive(),
  /** Where the NAR files were, and whether they are in the archive. */
  store: z.discriminatedUnion('kind', [
    z.strictObject({ kind: z.literal('local'), included: z.boolean() }),
    z.strictObject({
      kind: z.literal('s3'),
      included: z.literal(false),
      /** `s3://BUCKET/PREFIX?endpoint=...&region=...`, without credentials. */
      location: z.string(),
    }),
  ]),
  /** NAR files the database refers to (listed in `store-objects.tsv`), and their bytes. */
  storeObjects: z.strictObject({
    count: z.number().int().nonnegative(),
    bytes: z.number().int().nonnegative(),
  }),
  members: z.array(
    z.strictObject({
      name: z.string().min(1).max(255),
      size: z.number().int().nonnegative(),
      sha256: sha256Hex,
    }),
  ),
});

/** See {@link backupManifestSchema}. */
export type BackupManifest = z.infer<typeof backupManifestSchema>;
