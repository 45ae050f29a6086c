import { z } from 'zod';
import { deploymentResultSchema, deploymentStepSchema, desiredDeploymentSchema } from './agent-protocol.ts';

/** A detached activation: where its output and exit status go, and its process. */
export const activationRecordSchema = z.strictObject({
  /** The store path being activated (the new one, or the previous one when rolling back). */
  storePath: z.string(),
  logFile: z.string(),
  statusFile: z.string(),
  pid: z.number().int().positive().nullable(),
});
export type ActivationRecord = z.infer<typeof activationRecordSchema>;

/**
 * The agent's journal: what the deployment in progress has done, written before each step that
 * changes the machine, so that an agent that restarts (killed, power lost, its own service
 * restarted by the switch) finishes or rolls back the deployment and reports its true state.
 */
export const agentJournalSchema = z.strictObject({
  version: z.literal(1),
  deployment: desiredDeploymentSchema,
  /** The step about to run or running. */
  phase: deploymentStepSchema,
  /** Where the profile pointed before this deployment changed it (null: nothing to go back to). */
  previous: z.string().nullable(),
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
