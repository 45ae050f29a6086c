import { z } from 'zod';
import { isStorePath } from '../nix/store-path.ts';

/** The largest retention a cache may have: ten years. */
export const MAX_RETENTION_SECONDS = 10 * 365 * 24 * 60 * 60;

/** `PATCH /api/v1/workspaces/:ws/caches/:name`: a cache's retention and quota. */
export const cachePolicyBodySchema = z
  .strictObject({
    /** Seconds to keep what was pushed or fetched; null: the server's default (28 days). */
    retentionSeconds: z.number().int().min(1).max(MAX_RETENTION_SECONDS).nullable().optional(),
    /** Stored bytes above which least recently used paths go first; null: no quota. */
    quotaBytes: z.number().int().min(1).max(Number.MAX_SAFE_INTEGER).nullable().optional(),
  })
  .refine((b) => b.retentionSeconds !== undefined || b.quotaBytes !== undefined, {
    message: 'give retentionSeconds, quotaBytes or both',
  });

/** `POST /api/v1/workspaces/:ws/caches/:name/pins` */
export const pinBodySchema = z.strictObject({
  storePath: z.string().refine(isStorePath, { message: 'not a valid store path (/nix/store/<hash>-<name>)' }),
  /** When the pin lapses; absent: until unpinned. Must lie in the future. */
  expiresAt: z.iso.datetime({ offset: true }).optional(),
});

export const pinSchema = z.object({
  storePath: z.string(),
  createdAt: z.string(),
  createdBy: z.string(),
  expiresAt: z.string().nullable(),
});
export type PinInfo = z.infer<typeof pinSchema>;
export const pinListSchema = z.object({ pins: z.array(pinSchema) });

/** What a collection removed, or (dry run) would remove. */
export const gcResultSchema = z.object({
  cache: z.string(),
  dryRun: z.boolean(),
  startedAt: z.string(),
  finishedAt: z.string(),
  retentionSeconds: z.number(),
  quotaBytes: z.number().nullable(),
  paths: z.array(
    z.object({
      storePath: z.string(),
      reason: z.enum(['retention', 'quota']),
      fileSize: z.number(),
      narSize: z.number(),
    }),
  ),
  narFiles: z.array(z.object({ fileName: z.string(), fileSize: z.number() })),
  bytesFreed: z.number(),
  rootPaths: z.number(),
  keptPaths: z.number(),
  bytesKept: z.number(),
  spared: z.number(),
});
export type GcResultInfo = z.infer<typeof gcResultSchema>;

/** A cache's last collection, as `cache info` shows it. */
export const gcRunSchema = z.object({
  trigger: z.string(),
  startedAt: z.string(),
  finishedAt: z.string().nullable(),
  pathsRemoved: z.number(),
  narFilesRemoved: z.number(),
  bytesFreed: z.number(),
  error: z.string().nullable(),
});
export type GcRunInfo = z.infer<typeof gcRunSchema>;
