import { z } from 'zod';
import { deploymentResultSchema, deploymentStepSchema, desiredDeploymentSchema } from './agent-protocol.ts';

/** A detached activation: where its output and exit status go, and its process. */
export const activationRecordSchema = z.strictObject({
  /** The store path being activated (the new one, or the previous one when rolling back). */
  storePath: z.string(),
  logFile: z.string(),
  statusFile: z.string(),
  pid: z.number().int().positive().nullable(),
  /**
   * NixOS: the switch-to-configuration goal. `boot` only when the agent fell back to installing
   * the configuration for the next boot after the pre-switch checks refused a live switch;
   * `test` when a rollback re-activates a running system that was not the profile's generation
   * (the boot default stays as it was); absent means `switch` (and keeps journals readable by
   * agents that predate the field).
   */
  goal: z.enum(['switch', 'boot', 'test']).optional(),
  /**
   * The transient systemd unit the activation runs in, and the boot it was started in (from
   * /proc/sys/kernel/random/boot_id): an agent that restarts re-attaches by unit name within the
   * same boot, never by a pid. Absent where the activation runs as a detached process instead.
   */
  unit: z.strictObject({ name: z.string().min(1), bootId: z.string().nullable() }).optional(),
});
export type ActivationRecord = z.infer<typeof activationRecordSchema>;

/** The journal's format version; a journal of another version is set aside, never read. */
export const AGENT_JOURNAL_VERSION = 2;

/**
 * Whom a journal's deployment belongs to: deployment ids are per server and workspace, so the
 * agent resumes, skips or reports a journal entry only for the server, workspace and agent that
 * wrote it. `serverId` is null for a server that does not say its id (an unknown id, which
 * matches only another unknown one).
 */
export const journalOwnerSchema = z.strictObject({
  serverId: z.string().nullable(),
  workspace: z.string().nullable(),
  agent: z.string(),
});
export type JournalOwner = z.infer<typeof journalOwnerSchema>;

/** Whether two owners name the same server and workspace (the agent is compared apart). */
export function sameServer(a: Omit<JournalOwner, 'agent'>, b: Omit<JournalOwner, 'agent'>): boolean {
  return a.serverId === b.serverId && a.workspace === b.workspace;
}

/** The server and workspace of an owner, as a log line shows them. */
export function describeServer(o: Omit<JournalOwner, 'agent'>): string {
  return `server ${o.serverId ?? '(unknown id)'}, workspace ${o.workspace ?? '(unknown)'}`;
}

/**
 * The agent's journal: what the deployment in progress has done, written before each step that
 * changes the machine, so that an agent that restarts (killed, power lost, its own service
 * restarted by the switch) finishes or rolls back the deployment and reports its true state.
 */
export const agentJournalSchema = z.strictObject({
  version: z.literal(AGENT_JOURNAL_VERSION),
  /** The server, workspace and agent the deployment belongs to (version 2). */
  owner: journalOwnerSchema,
  deployment: desiredDeploymentSchema,
  /** The step about to run or running. */
  phase: deploymentStepSchema,
  /** Where the profile pointed before this deployment changed it (null: nothing to go back to). */
  previous: z.string().nullable(),
  /**
   * What ran before this deployment, when it differs in kind from `previous`: NixOS's
   * `/run/current-system`, Home Manager's current generation (its `current-home` GC root). A
   * rollback returns the machine to this; absent in journals of agents that predate it.
   */
  running: z.string().nullable().optional(),
  /**
   * NixOS: the specialisation of the deployment's system the agent switches to (forced by the
   * agent's setting, or the one the machine ran); null or absent: the base configuration.
   */
  specialisation: z.string().nullable().optional(),
  /** Whether the result says a reboot is required, as last computed (kept across restarts). */
  rebootRequired: z.boolean().optional(),
  /** Whether the profile was changed (a rollback is needed on failure). */
  switched: z.boolean(),
  activation: activationRecordSchema.nullable(),
  /** Why the deployment is being rolled back. */
  failure: z.strictObject({ step: deploymentStepSchema, reason: z.string() }).nullable(),
  result: deploymentResultSchema.nullable(),
  /** True once the server has the result. */
  reported: z.boolean(),
  updatedAt: z.number(),
});
export type AgentJournal = z.infer<typeof agentJournalSchema>;
