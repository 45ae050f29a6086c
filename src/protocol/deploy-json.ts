import { z } from 'zod';
import { isStorePath } from '../nix/store-path.ts';
import { NAME_PATTERN } from './token-scope.ts';

const storePathSchema = z
  .string()
  .refine(isStorePath, { message: 'not a valid store path (/nix/store/<hash>-<name>)' });

/** Health checks are Cairn's extension; see docs/deploy-json.md. Unknown keys are kept out. */
export const exit4PolicySchema = z.enum(['fail', 'tolerate']);

/**
 * `deploy.json`, Cachix Deploy's format: agents by name to the store path each should run, and
 * optional rollback scripts by Nix system. Cairn adds optional keys, never removes any.
 */
export const deployJsonSchema = z.object({
  agents: z
    .record(
      z.string().regex(NAME_PATTERN, 'agent names are 1-63 characters of a-z, 0-9, ".", "_" and "-"'),
      storePathSchema,
    )
    .refine((a) => Object.keys(a).length > 0, { message: 'names no agent' }),
  rollbackScript: z.record(z.string().min(1), storePathSchema).optional(),
  /** What a NixOS switch exiting 4 (some units failed, system switched) means: failure (default) or success. */
  exit4: exit4PolicySchema.optional(),
});
export type DeployJson = z.infer<typeof deployJsonSchema>;
