import { z } from 'zod';
import { isStorePath } from '../nix/store-path.ts';
import { exit4PolicySchema } from './deploy-json.ts';
import { finalStateSchema } from './deployment-state.ts';
import { healthCheckSchema } from './health-check.ts';

/**
 * The agent protocol's version. Bump it for every change that an older peer would misread,
 * with a dated line below; the server accepts the previous version for one release.
 *
 * 1 (2026-11-25): hello/welcome, desired state, progress, logs, results, health checks,
 *   connectivity confirmation (confirm/confirmed), reboot-required in results.
 * 1 (2026-11-25): `closure` (agent to server) after realising, in parts; still unreleased, so no bump.
 * 1 (2026-11-25): optional `src` and `n` on log lines, for dropping lines sent twice; unreleased.
 * 1 (2026-11-25): `going-away` (server to agent) before a shutdown; unreleased.
 * 1 (2026-12-07): both sides ignore unknown fields (objects strip them); no bump, as it only accepts more.
 * 1 (2026-12-07): optional `serverId` and `workspace` in `welcome`, so that the agent's journal names
 *   the server and workspace its deployment ids belong to; unreleased, so no bump.
 * 2 (2026-12-07): `plan` (server to agent) and `plan-result` (agent to server): the machine says
 *   what a deployment would download and, for NixOS, what `dry-activate` would do. A version-1
 *   agent drops a message of a type it does not know, so the server never asks one: the plan
 *   says "unsupported" for it at once.
 */
export const AGENT_PROTOCOL_VERSION = 2;

/** The first agent protocol version that answers `plan`. */
export const PLAN_PROTOCOL_VERSION = 2;

/**
 * Room the store's disk must have beyond a download's unpacked size: the agent refuses to
 * realise with less, and a plan reports "not enough disk space" by the same rule.
 */
export const DISK_MARGIN = 1.1;

/** Oldest agent protocol version the server still accepts. */
export const MIN_AGENT_PROTOCOL_VERSION = 1;

/** WebSocket path of the agent connection. */
export const AGENT_WS_PATH = '/api/v1/agent/ws';

/** Largest agent message either side accepts, in bytes. */
export const MAX_AGENT_MESSAGE_BYTES = 1024 * 1024;

const storePath = z.string().refine(isStorePath, { message: 'not a valid store path' });

/*
 * Forward compatibility: every object below is a plain (stripping) zod object, so either side
 * ignores a field the other side's newer version adds, as the previous protocol version promises.
 * A message of an unknown *type* is still invalid (the agent logs and drops it; the server answers
 * with an error). Health checks are strict in `deploy.json`, where an unknown key is a user's typo,
 * and loose here, where it is a newer server's addition.
 */
const [commandCheck, httpCheck, systemdCheck] = healthCheckSchema.options;
const wireHealthCheck = z.union([commandCheck.strip(), httpCheck.strip(), systemdCheck.strip()]);
const id = z.string().min(1).max(64);

/** Kinds of profile the agent activates. */
export const profileKindSchema = z.enum(['nixos', 'nix-darwin', 'home-manager', 'plain']);
export type ProfileKind = z.infer<typeof profileKindSchema>;

/** The steps a deployment goes through, in order. */
export const deploymentStepSchema = z.enum([
  'realise',
  'set-profile',
  'activate',
  'rollback-script',
  'health-check',
  'confirm',
  'rollback',
  'done',
]);
export type DeploymentStep = z.infer<typeof deploymentStepSchema>;

/** What the agent observes on its machine. */
export const observedSchema = z.object({
  storePath: storePath.nullable(),
  generation: z.number().int().nonnegative().nullable(),
  kind: profileKindSchema.nullable(),
  system: z.string().max(100),
  hostname: z.string().max(255),
  agentVersion: z.string().max(50),
  nixVersion: z.string().max(100),
  profile: z.string().max(4096),
});
export type Observed = z.infer<typeof observedSchema>;

/** A deployment as the agent receives it. */
export const desiredDeploymentSchema = z.object({
  id,
  storePath,
  rollbackScript: storePath.nullable(),
  exit4: exit4PolicySchema,
  healthChecks: z.array(wireHealthCheck).max(100),
  /** Seconds to get a new connection's confirmation after activating, before rolling back. */
  confirmTimeoutSeconds: z.number().int().positive(),
  /** The kind of deployment: a rollback asked for with `cairn deploy rollback` runs the same steps. */
  rollback: z.boolean(),
});
export type DesiredDeployment = z.infer<typeof desiredDeploymentSchema>;

/** A binary cache the agent may substitute from. */
export const agentCacheSchema = z.object({
  url: z.string().url(),
  publicKey: z.string(),
  private: z.boolean(),
});
export type AgentCache = z.infer<typeof agentCacheSchema>;

/** The outcome of a deployment, as the agent reports it. */
export const deploymentResultSchema = z.object({
  deploymentId: id,
  state: finalStateSchema,
  /** The step that failed, for `rolled-back` and `failed`. */
  step: deploymentStepSchema.nullable(),
  reason: z.string().max(4000).nullable(),
  /** NixOS: the new system's kernel, initrd or modules differ from the booted one's. */
  rebootRequired: z.boolean(),
});
export type DeploymentResult = z.infer<typeof deploymentResultSchema>;

/**
 * One log line of a deployment, with the agent's clock. A line may say where it comes from
 * (`src`) and its number there (`n`, increasing): the server drops a line whose number it has
 * already had from the same source for the same deployment, so that lines sent again (after a
 * dropped connection, or by a restarted agent re-reading its activation's output) appear once.
 */
export const logLineSchema = z.object({
  t: z.number().int().nonnegative(),
  text: z.string().max(16_384),
  src: z.string().min(1).max(64).optional(),
  n: z.number().int().nonnegative().optional(),
});
export type LogLine = z.infer<typeof logLineSchema>;

/** One store path of a realised closure, as `nix path-info --json -r` reports it. */
export const closurePathSchema = z.object({
  path: storePath,
  narSize: z.number().int().nonnegative(),
  /** Full store paths, possibly the path itself. */
  references: z.array(storePath).max(100_000),
});
export type ClosurePath = z.infer<typeof closurePathSchema>;

/** Paths of a plan's lists the agent sends at most (a NixOS system has a few thousand). */
export const MAX_PLAN_PATHS = 8000;

/** Units `switch-to-configuration dry-activate` says it would act on, and what else it said. */
export const dryActivationSchema = z.discriminatedUnion('status', [
  z.object({
    status: z.literal('done'),
    stop: z.array(z.string().max(1024)).max(10_000),
    restart: z.array(z.string().max(1024)).max(10_000),
    start: z.array(z.string().max(1024)).max(10_000),
    reload: z.array(z.string().max(1024)).max(10_000),
    /** The new system's kernel, initrd or modules differ from the booted one's. */
    rebootRequired: z.boolean(),
    /** Other lines it printed ("would restart systemd", warnings), at most 200. */
    notes: z.array(z.string().max(4096)).max(200),
  }),
  /** nix-darwin, Home Manager and plain profiles have no dry-activate. */
  z.object({ status: z.literal('unsupported'), reason: z.string().max(4000) }),
  z.object({ status: z.literal('failed'), reason: z.string().max(4000) }),
]);
export type DryActivation = z.infer<typeof dryActivationSchema>;

/** What the machine says a deployment of a store path would do (`plan-result`). */
export const machinePlanSchema = z.object({
  /** Paths the store lacks and the caches have: what the deployment would download. */
  fetch: z.array(storePath).max(MAX_PLAN_PATHS),
  /** Paths the store lacks and no cache has (Nix would have to build them). */
  build: z.array(storePath).max(MAX_PLAN_PATHS),
  /** The lists above were cut at MAX_PLAN_PATHS. */
  truncated: z.boolean(),
  /** Free bytes on the file system of /nix/store. */
  freeBytes: z.number().int().nonnegative(),
  /** The closure's kind, when the machine has it (always after a dry-activate). */
  kind: profileKindSchema.nullable(),
  /** Null when not asked for. */
  dryActivate: dryActivationSchema.nullable(),
});
export type MachinePlan = z.infer<typeof machinePlanSchema>;

/** Messages from agent to server. */
export const agentMessageSchema = z.discriminatedUnion('type', [
  z.object({
    type: z.literal('hello'),
    // Any version is read, so that one too old is told so (the hub compares it with the minimum).
    protocol: z.number().int().nonnegative(),
    observed: observedSchema,
    /** The deployment the agent is running now, if any: the server keeps it running. */
    running: id.nullable(),
    /** Results the agent could not deliver before its connection dropped. */
    unreported: z.array(deploymentResultSchema).max(100),
  }),
  z.object({ type: z.literal('progress'), deploymentId: id, step: deploymentStepSchema }),
  z.object({
    type: z.literal('log'),
    deploymentId: id,
    lines: z.array(logLineSchema).min(1).max(1000),
  }),
  z.object({ type: z.literal('result'), result: deploymentResultSchema, observed: observedSchema }),
  z.object({ type: z.literal('observed'), observed: observedSchema }),
  /** Sent over a new connection after activating: the deployment is reachable. */
  z.object({ type: z.literal('confirm'), deploymentId: id }),
  /**
   * The closure of the deployment's store path, realised on the machine. A large closure comes
   * in several messages (each under MAX_AGENT_MESSAGE_BYTES); `final` marks the last one.
   */
  z.object({
    type: z.literal('closure'),
    deploymentId: id,
    paths: z.array(closurePathSchema).max(100_000),
    final: z.boolean(),
  }),
  /** The answer to `plan`: the machine's plan, or why there is none. */
  z.object({
    type: z.literal('plan-result'),
    requestId: id,
    plan: machinePlanSchema.nullable(),
    error: z.string().max(4000).nullable(),
  }),
]);
export type AgentMessage = z.infer<typeof agentMessageSchema>;

/** Messages from server to agent. */
export const serverMessageSchema = z.discriminatedUnion('type', [
  z.object({
    type: z.literal('welcome'),
    protocol: z.number().int().positive(),
    agent: z.string(),
    /**
     * The server's stable identity (a random id kept in its database): deployment ids are per
     * server. Absent from an older server: the agent then treats the id as unknown.
     */
    serverId: z.string().min(1).max(64).optional(),
    /** The workspace the agent belongs to. */
    workspace: z.string().min(1).max(64).optional(),
    caches: z.array(agentCacheSchema),
    desired: desiredDeploymentSchema.nullable(),
  }),
  /** The desired state changed: run this deployment (null: nothing to do). */
  z.object({ type: z.literal('desired'), desired: desiredDeploymentSchema.nullable() }),
  /** A deployment the agent should not start (superseded or cancelled). */
  z.object({ type: z.literal('cancel'), deploymentId: id }),
  /** The answer to `confirm`: the server heard the agent after its switch. */
  z.object({ type: z.literal('confirmed'), deploymentId: id }),
  z.object({ type: z.literal('error'), code: z.string(), message: z.string() }),
  /**
   * The server is shutting down (a close with 4503 follows): reconnect at a random moment within
   * this many seconds, so that a large fleet does not come back all at once.
   */
  /**
   * Asks what deploying `storePath` would do, changing nothing (protocol 2): the agent answers
   * with `plan-result` within `timeoutSeconds`.
   */
  z.object({
    type: z.literal('plan'),
    requestId: id,
    storePath,
    rollbackScript: storePath.nullable(),
    dryActivate: z.boolean(),
    timeoutSeconds: z.number().int().min(1).max(3600),
  }),
  z.object({
    type: z.literal('going-away'),
    reconnectWithinSeconds: z.number().int().min(1).max(600),
  }),
]);
export type ServerMessage = z.infer<typeof serverMessageSchema>;

/** WebSocket close codes Cairn uses (4000-4999 are for applications). */
export const CLOSE_CODES = {
  invalidMessage: 4400,
  unauthorized: 4401,
  revoked: 4403,
  replaced: 4409,
  rateLimited: 4429,
  shuttingDown: 4503,
} as const;
