import { z } from 'zod';

/** Final states of a deployment: once in one, it never changes again. */
export const finalStateSchema = z.enum(['succeeded', 'rolled-back', 'failed', 'cancelled']);
export type FinalState = z.infer<typeof finalStateSchema>;

/** Every state of a deployment: `pending` until the agent starts it, `running`, then final. */
export const deploymentStateSchema = z.enum(['pending', 'running', ...finalStateSchema.options]);
export type DeploymentState = z.infer<typeof deploymentStateSchema>;

/** Every state of a deployment, in the order a deployment goes through them. */
export const DEPLOYMENT_STATES: readonly DeploymentState[] = deploymentStateSchema.options;

/** The states in which a deployment is over. */
export const FINAL_STATES: readonly FinalState[] = finalStateSchema.options;

/** The states in which a deployment is not over yet. */
export const OPEN_STATES: readonly DeploymentState[] = DEPLOYMENT_STATES.filter(
  (s) => !(FINAL_STATES as readonly string[]).includes(s),
);

/** True when `state` (as any string from the wire) is a final state of a deployment. */
export function isFinalState(state: string): state is FinalState {
  return (FINAL_STATES as readonly string[]).includes(state);
}

/** True when `state` (as any string from the wire) is a state in which a deployment is not over. */
export function isOpenState(state: string): boolean {
  return (OPEN_STATES as readonly string[]).includes(state);
}

/** The reason a deployment gets when a newer deployment to its agent cancels it before it starts. */
export const SUPERSEDED_REASON = 'superseded by a newer deployment';
