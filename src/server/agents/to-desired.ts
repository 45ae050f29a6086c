import type { DesiredDeployment } from '../../protocol/agent-protocol.ts';

/** The columns of a deployment row that an agent is told. */
export interface DesiredColumns {
  readonly id: number;
  readonly store_path: string;
  readonly rollback_script: string | null;
  readonly exit4: string;
  readonly health_checks: string | null;
  readonly confirm_timeout: number;
  readonly kind: string;
}

/**
 * Maps a deployment row to what an agent is told to run; `system` (the agent's Nix system) picks
 * its rollback script from the ones stored per system.
 */
export function toDesired(d: DesiredColumns, system: string): DesiredDeployment {
  const scripts = d.rollback_script === null ? {} : (parsedOnce(d.rollback_script) as Record<string, string>);
  return {
    id: String(d.id),
    storePath: d.store_path,
    rollbackScript: Object.hasOwn(scripts, system) ? (scripts[system] ?? null) : null,
    exit4: d.exit4 === 'tolerate' ? 'tolerate' : 'fail',
    healthChecks:
      d.health_checks === null ? [] : (parsedOnce(d.health_checks) as DesiredDeployment['healthChecks']),
    confirmTimeoutSeconds: d.confirm_timeout,
    rollback: d.kind === 'rollback',
  };
}

/**
 * JSON.parse, remembered for the last few texts: every deployment of a rollout carries the same
 * rollback scripts and health checks, and a fan-out to 10,000 agents need not parse them 10,000
 * times. The result is shared: callers must not change it.
 */
const parsed = new Map<string, unknown>();
function parsedOnce(text: string): unknown {
  let value = parsed.get(text);
  if (value === undefined) {
    value = JSON.parse(text);
    if (parsed.size >= 64) parsed.clear();
    parsed.set(text, value);
  }
  return value;
}
