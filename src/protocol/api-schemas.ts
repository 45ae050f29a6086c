import { z } from 'zod';
import { dryActivationSchema } from './agent-protocol.ts';
import { tagListSchema } from './agent-tags.ts';
import { gcRunSchema } from './cache-gc-schemas.ts';
import { nameSchema, tokenScopeSchema } from './token-scope.ts';

/** The one error body of every HTTP error Cairn returns. */
export const errorBodySchema = z.object({
  code: z.string(),
  message: z.string(),
  detail: z.string().optional(),
  validations: z.array(z.object({ field: z.string(), message: z.string() })).optional(),
});
export type ErrorBody = z.infer<typeof errorBodySchema>;

/** `POST /api/v1/workspaces/:ws/caches` */
export const createCacheBodySchema = z.strictObject({ name: nameSchema, public: z.boolean().default(false) });
export type CreateCacheBody = z.input<typeof createCacheBodySchema>;

/** A cache as the API shows it. */
export const cacheInfoSchema = z.object({
  name: z.string(),
  public: z.boolean(),
  publicKey: z.string(),
  url: z.string(),
  createdAt: z.string(),
  paths: z.number().int().nonnegative(),
  narBytes: z.number().int().nonnegative(),
  fileBytes: z.number().int().nonnegative(),
  /** Kept what was pushed or fetched this recently (seconds); the server's default unless set. */
  retentionSeconds: z.number().int().positive(),
  retentionIsDefault: z.boolean(),
  /** Stored bytes over which least recently used paths go first; null: no quota. */
  quotaBytes: z.number().int().positive().nullable(),
  /**
   * One cache's answer only: the public keys it signs with, oldest first (more than one during a
   * rotation: machines may trust any of them; `publicKey` is the newest).
   */
  signingKeys: z.array(z.string()).optional(),
  /** One cache's answer only: what a collection would free now, and the last collection. */
  usage: z
    .object({
      reclaimablePaths: z.number().int().nonnegative(),
      reclaimableNarFiles: z.number().int().nonnegative(),
      reclaimableBytes: z.number().int().nonnegative(),
      rootPaths: z.number().int().nonnegative(),
      pins: z.number().int().nonnegative(),
      lastGc: gcRunSchema.nullable(),
    })
    .optional(),
});
export type CacheInfo = z.infer<typeof cacheInfoSchema>;

export const cacheListSchema = z.object({ caches: z.array(cacheInfoSchema) });

/** A signing key of a cache, as the API shows it: never the secret. */
export const cacheKeyInfoSchema = z.object({
  name: z.string(),
  publicKey: z.string(),
  createdAt: z.string(),
  /** When it was retired; null while it signs. */
  retiredAt: z.string().nullable(),
});
export type CacheKeyInfo = z.infer<typeof cacheKeyInfoSchema>;

/** The signing keys of a cache, oldest first: the answer of every `.../caches/:name/keys` route. */
export const cacheKeysSchema = z.object({ keys: z.array(cacheKeyInfoSchema) });

/** `POST /api/v1/workspaces/:ws/tokens` */
export const createTokenBodySchema = z.strictObject({
  name: z.string().min(1).max(200),
  scopes: z.array(tokenScopeSchema).min(1),
  expiresAt: z.iso.datetime().optional(),
});
export type CreateTokenBody = z.infer<typeof createTokenBodySchema>;

/** A token as listed: never the secret. */
export const tokenInfoSchema = z.object({
  id: z.string(),
  name: z.string(),
  scopes: z.array(z.string()),
  createdAt: z.string(),
  expiresAt: z.string().nullable(),
  revokedAt: z.string().nullable(),
  lastUsedAt: z.string().nullable(),
});
export type TokenInfo = z.infer<typeof tokenInfoSchema>;

/** The answer to creating a token: the secret, shown this once. */
export const createdTokenSchema = tokenInfoSchema.extend({ token: z.string() });

export const tokenListSchema = z.object({ tokens: z.array(tokenInfoSchema) });

/** `POST /api/v1/workspaces/:ws/caches/:name/missing`: which of these store paths the cache lacks. */
export const missingPathsBodySchema = z.strictObject({ paths: z.array(z.string()).max(100_000) });
export const missingPathsSchema = z.object({ missing: z.array(z.string()) });

/** `POST /api/v1/workspaces/:ws/agents` */
export const createAgentBodySchema = z.strictObject({ name: nameSchema, tags: tagListSchema.optional() });

/**
 * `PATCH /api/v1/workspaces/:ws/agents/:name/tags`: tags to add and tags to remove, applied
 * together; adding a tag the agent has, or removing one it lacks, changes nothing. The answer
 * is the agent.
 */
export const changeAgentTagsBodySchema = z
  .strictObject({ add: tagListSchema.default([]), remove: tagListSchema.default([]) })
  .superRefine((body, ctx) => {
    if (body.add.length === 0 && body.remove.length === 0)
      ctx.addIssue({ code: 'custom', message: 'give at least one tag to add or remove' });
    for (const tag of body.add.filter((t) => body.remove.includes(t)))
      ctx.addIssue({ code: 'custom', path: ['remove'], message: `tag '${tag}' is both added and removed` });
  });

/** An agent as the API shows it. */
export const agentInfoSchema = z.object({
  name: z.string(),
  online: z.boolean(),
  lastSeenAt: z.string().nullable(),
  storePath: z.string().nullable(),
  generation: z.number().nullable(),
  kind: z.string().nullable(),
  system: z.string().nullable(),
  hostname: z.string().nullable(),
  agentVersion: z.string().nullable(),
  nixVersion: z.string().nullable(),
  profile: z.string().nullable(),
  createdAt: z.string(),
  /** Its tags, sorted; absent from servers older than agent tags. */
  tags: z.array(z.string()).default([]),
  /** Enrolled with a token that requires approval, and not yet approved: it receives no deployment. */
  pendingApproval: z.boolean().default(false),
});
export type AgentInfo = z.infer<typeof agentInfoSchema>;
export const agentListSchema = z.object({ agents: z.array(agentInfoSchema) });
/** The answer to creating an agent: its token, shown this once. */
export const createdAgentSchema = z.object({ agent: agentInfoSchema, token: z.string() });

/** A deployment as the API shows it. */
export const deploymentInfoSchema = z.object({
  id: z.number(),
  rolloutId: z.number(),
  agent: z.string(),
  storePath: z.string(),
  /** `deploy`, or `rollback` for one made by `cairn deploy rollback`. */
  kind: z.string(),
  state: z.string(),
  step: z.string().nullable(),
  reason: z.string().nullable(),
  /** NixOS: the switch is live but the new kernel needs a reboot. */
  rebootRequired: z.boolean(),
  createdAt: z.string(),
  startedAt: z.string().nullable(),
  finishedAt: z.string().nullable(),
  /** Staged rollouts: the deployment's batch (0 is the canaries' when there are canaries). */
  batch: z.number().nullable().optional(),
  /** Staged rollouts: where the agent stands (`ROLLOUT_AGENT_STATES`). */
  rolloutState: z.string().nullable().optional(),
  /** Total NAR size of the store path's closure, once the agent reported it (null before). */
  closureSize: z.number().nullable().optional(),
  /** The same of the closure the agent ran when the rollout was made, where known (rollouts only). */
  previousClosureSize: z.number().nullable().optional(),
});
export type DeploymentInfo = z.infer<typeof deploymentInfoSchema>;
export const deploymentListSchema = z.object({ deployments: z.array(deploymentInfoSchema) });

/** One batch of a staged rollout. */
export const rolloutBatchSchema = z.object({
  index: z.number(),
  /** `canary`, or the batch's cumulative size as written (`10%`, `3`). */
  label: z.string(),
  advance: z.enum(['auto', 'manual']),
  /** Agents in this batch (not cumulative). */
  agents: z.number(),
  /** `waiting` (not opened), `open`, or `done`. */
  state: z.enum(['waiting', 'open', 'done']),
  openedAt: z.string().nullable(),
});

/** Where a staged rollout stands; null on a rollout that deploys at once. */
export const stagedRolloutSchema = z.object({
  /** `ROLLOUT_STATES` of `src/protocol/rollout-policy.ts`. */
  state: z.string(),
  /** Why it ended (failed, aborted, superseded), or why it paused. */
  reason: z.string().nullable(),
  /** Why it waits now: bake, a manual gate, offline agents, a deadline. */
  waiting: z.string().nullable(),
  /** The batch open now; -1 before the first opens. */
  batch: z.number(),
  batches: z.array(rolloutBatchSchema),
  /** Agents counted by the threshold: decided so far, and failed among them. */
  decided: z.number(),
  failed: z.number(),
  /** Agents held back because they were offline when their batch opened. */
  deferred: z.number(),
  /** The policy with every default filled in (durations in milliseconds). */
  policy: z.record(z.string(), z.unknown()),
  finishedAt: z.string().nullable(),
});
export type StagedRollout = z.infer<typeof stagedRolloutSchema>;

/** A rollout: the deployments one `deploy activate` created. */
export const rolloutInfoSchema = z.object({
  id: z.number(),
  url: z.string(),
  deployments: z.array(deploymentInfoSchema),
  /** Present and non-null when the rollout is staged. */
  staged: stagedRolloutSchema.nullable().optional(),
});
export type RolloutInfo = z.infer<typeof rolloutInfoSchema>;

/** Log lines of a deployment. */
export const deploymentLogsSchema = z.object({
  lines: z.array(z.object({ seq: z.number(), t: z.number(), text: z.string() })),
});

/** Events of `GET .../rollouts/:id/events` (Server-Sent Events), by event name. */
export const rolloutStateEventSchema = z.object({
  deploymentId: z.number(),
  agent: z.string(),
  state: z.string(),
  step: z.string().nullable(),
  reason: z.string().nullable(),
});
export const rolloutLogEventSchema = z.object({
  deploymentId: z.number(),
  agent: z.string(),
  lines: z.array(z.object({ seq: z.number(), t: z.number(), text: z.string() })),
});

/** `POST /api/v1/workspaces/:ws/agents/:name/rollback` */
export const rollbackBodySchema = z.strictObject({ to: z.number().int().positive().optional() });

/** Bodies of the staged-rollout operations (`.../rollouts/:id/promote` and `/abort`); both optional. */
export const promoteBodySchema = z.strictObject({ full: z.boolean().optional() });
export const abortBodySchema = z.strictObject({ revert: z.boolean().optional() });

/** One side of a package in a closure diff (see `src/nix/closure-diff.ts`). */
export const packageSideSchema = z.object({
  versions: z.array(z.string()),
  paths: z.array(z.string()),
  narSize: z.number(),
});

/** A package-level closure diff, as `diffClosures` computes it. */
export const closureDiffSchema = z.object({
  packages: z.array(
    z.object({
      pname: z.string(),
      change: z.enum(['added', 'removed', 'upgraded', 'downgraded', 'changed', 'rebuilt']),
      before: packageSideSchema,
      after: packageSideSchema,
      narSizeDelta: z.number(),
    }),
  ),
  before: z.object({ paths: z.number(), narSize: z.number() }),
  after: z.object({ paths: z.number(), narSize: z.number() }),
  pathsAdded: z.number(),
  pathsRemoved: z.number(),
  narSizeDelta: z.number(),
});
export type ClosureDiffInfo = z.infer<typeof closureDiffSchema>;

/**
 * Where one side of a diff came from: `cache` when it was computed from the workspace's caches
 * (verified), `agent` when all or part of it is as a machine reported it after realising it (not
 * verified; `reportedBy` names that agent, always the side's own), `none` when nothing is known
 * (an empty side). `missing` counts paths neither knew: the side is then a lower bound.
 */
export const closureSourceSchema = z.object({
  deploymentId: z.number().nullable(),
  agent: z.string().nullable(),
  storePath: z.string().nullable(),
  source: z.enum(['agent', 'cache', 'none']),
  /** Absent from servers older than the field. */
  reportedBy: z.string().nullable().optional(),
  missing: z.number(),
});

/** `GET /api/v1/workspaces/:ws/deployments/diff?from=A&to=B` */
export const deploymentDiffSchema = z.object({
  from: closureSourceSchema,
  to: closureSourceSchema,
  diff: closureDiffSchema,
});
export type DeploymentDiff = z.infer<typeof deploymentDiffSchema>;

/** One path a machine would download, with its sizes from the workspace's caches (null: no cache has it). */
export const plannedDownloadSchema = z.object({
  path: z.string(),
  narSize: z.number().nullable(),
  fileSize: z.number().nullable(),
});

/**
 * What an agent's machine said about the plan, or why it said nothing (`status`): `answered`;
 * `unchanged` (it runs the proposed path: not asked); `offline`; `elsewhere` (connected to another
 * server replica); `unsupported` (its agent predates plans); `timeout`; `failed` (its reason in
 * `message`). `message` is the line people read.
 */
export const machinePlanInfoSchema = z.object({
  status: z.enum(['answered', 'unchanged', 'offline', 'elsewhere', 'unsupported', 'timeout', 'failed']),
  message: z.string(),
  /** What a deployment would download, exactly: the paths the machine's store lacks. */
  download: z
    .object({
      paths: z.array(plannedDownloadSchema),
      narSize: z.number(),
      fileSize: z.number(),
      /** Paths of the list whose sizes no workspace cache knows (not counted above). */
      unknownSizes: z.number(),
    })
    .nullable(),
  /** Paths the machine lacks that no cache has: the deployment would fail to realise them. */
  unavailable: z.array(z.string()),
  /** The machine's lists were cut short (very large closures). */
  truncated: z.boolean(),
  freeBytes: z.number().nullable(),
  /** False when the download, unpacked and with a 10% margin, exceeds the free space. */
  diskOk: z.boolean().nullable(),
  kind: z.string().nullable(),
  dryActivate: dryActivationSchema.nullable(),
});
export type MachinePlanInfo = z.infer<typeof machinePlanInfoSchema>;

/** Whether a machine's answer shows something that would make the deployment fail. */
export function planBlocked(m: MachinePlanInfo | undefined): boolean {
  return (
    m?.status === 'answered' &&
    (m.diskOk === false || m.unavailable.length > 0 || m.dryActivate?.status === 'failed')
  );
}

/** Whether a machine asked for a plan said nothing (offline, too old, timed out, ...): its part is the estimate. */
export function planUnheard(m: MachinePlanInfo | undefined): boolean {
  return m !== undefined && m.status !== 'answered' && m.status !== 'unchanged';
}

/** `POST /api/v1/workspaces/:ws/plan` query: ask the agents, dry-activate, how long to wait. */
export const planQuerySchema = z.strictObject({
  machines: z.enum(['true', 'false']).optional(),
  dryActivate: z.enum(['true', 'false']).optional(),
  timeout: z
    .string()
    .regex(/^[0-9]{1,4}$/, 'expected whole seconds')
    .transform(Number)
    .pipe(z.number().int().min(1).max(3600))
    .optional(),
});

/** `POST /api/v1/workspaces/:ws/plan` (body: deploy.json): what activating it would change, per agent. */
export const rolloutPlanSchema = z.object({
  agents: z.array(
    z.object({
      agent: z.string(),
      current: closureSourceSchema,
      proposed: closureSourceSchema,
      /** True when the agent runs the proposed path already. */
      unchanged: z.boolean(),
      diff: closureDiffSchema,
      /**
       * What the agent would download: the proposed closure's paths not in its current closure
       * (an upper bound: the machine may hold more). `fileSize` is the compressed size, counted
       * over the paths whose NAR file a workspace cache holds (`filePaths` of them).
       */
      download: z.object({
        paths: z.number(),
        narSize: z.number(),
        fileSize: z.number(),
        filePaths: z.number(),
      }),
      /** What the machine itself said; absent when the agents were not asked (`machines=false`). */
      machine: machinePlanInfoSchema.optional(),
    }),
  ),
});
export type RolloutPlan = z.infer<typeof rolloutPlanSchema>;

/** `GET /api/v1/workspaces/:ws/audit` */
export const auditListSchema = z.object({
  entries: z.array(
    z.object({
      id: z.number(),
      at: z.string(),
      tokenId: z.string().nullable(),
      tokenName: z.string().nullable(),
      action: z.string(),
      target: z.string(),
      address: z.string().nullable(),
      detail: z.record(z.string(), z.unknown()).nullable(),
    }),
  ),
});
