import type { DeploymentStep } from '../protocol/agent-protocol.ts';

/** A deployment step failed: the deployment fails there, or rolls back if the profile changed. */
export class StepFailure extends Error {
  constructor(
    readonly step: DeploymentStep,
    message: string,
  ) {
    super(message);
  }
}
