import { z } from 'zod';
import { isStorePath } from '../nix/store-path.ts';
import { healthCheckSchema } from './health-check.ts';
import { rolloutPolicySchema } from './rollout-policy.ts';
import { NAME_PATTERN } from './token-scope.ts';

const storePathSchema = z
  .string()
  .refine(isStorePath, { message: 'not a valid store path (/nix/store/<hash>-<name>)' });

/** What NixOS's exit code 4 means for a deployment: failure (default) or success. */
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
  /**
   * Cairn's extension: health checks by agent name, `*` for every agent (an agent runs the `*`
   * checks and then its own).
   */
  healthChecks: z.record(z.string(), z.array(healthCheckSchema).max(50)).optional(),
  /**
   * Cairn's extension: seconds the agent has after activating to reach the server over a new
   * connection and have the deployment confirmed; past that it rolls back on its own.
   */
  confirmTimeoutSeconds: z.number().int().min(5).max(3600).optional(),
  /**
   * Cairn's extension: stage the rollout (canaries, batches, bake time, failure threshold); without
   * it every agent gets the deployment at once. Also given as a separate file (`--rollout`).
   */
  rollout: rolloutPolicySchema.optional(),
});
export type DeployJson = z.infer<typeof deployJsonSchema>;
/** deploy.json as written, before defaults are filled in. */
export type DeployJsonInput = z.input<typeof deployJsonSchema>;
