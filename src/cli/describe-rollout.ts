import type { DeploymentInfo, RolloutInfo, StagedRollout } from '../protocol/api-schemas.ts';
import { formatBytes, formatTable } from './format-table.ts';

/** `12.0 MiB (+1.5 MiB)`: a deployment's closure size and its change from what the agent ran. */
export function closureColumn(d: DeploymentInfo): string {
  if (d.closureSize === null || d.closureSize === undefined) return '-';
  const before = d.previousClosureSize;
  if (before === null || before === undefined) return formatBytes(d.closureSize);
  const delta = d.closureSize - before;
  const sign = delta > 0 ? '+' : delta < 0 ? '-' : '±';
  return `${formatBytes(d.closureSize)} (${sign}${formatBytes(Math.abs(delta))})`;
}

/** A batch as people read it: numbered from 1, with its label: `batch 2/4 (50%)`. */
export function batchName(staged: StagedRollout, index: number): string {
  return `batch ${index + 1}/${staged.batches.length} (${staged.batches[index]?.label ?? '?'})`;
}

/** `1 agent`, `3 agents`; `1 batch`, `2 batches`. */
export function plural(n: number, word: string): string {
  return `${n} ${n === 1 ? word : word.endsWith('ch') ? `${word}es` : `${word}s`}`;
}

/** A staged rollout's state and why: `rollout 12: paused (paused by admin)`. */
export function stateLine(id: number, staged: StagedRollout): string {
  return `rollout ${id}: ${staged.state}${staged.reason ? ` (${staged.reason})` : ''}`;
}

/** `10%` or `2` from the policy's `{percent}` / `{count}`, whatever the server sent. */
function amount(v: unknown): string {
  if (v && typeof v === 'object') {
    if ('percent' in v) return `${String(v.percent)}%`;
    if ('count' in v) return String(v.count);
  }
  return String(v);
}

/** The failure threshold and its counts: `1 failed of 4 decided (trips at 10% once 5 are decided)`. */
export function thresholdLine(staged: StagedRollout): string {
  const t = staged.policy.failureThreshold as { max?: unknown; minSample?: unknown } | undefined;
  const rule = t ? ` (trips at ${amount(t.max)} failed once ${String(t.minSample)} are decided)` : '';
  return `${staged.failed} failed of ${staged.decided} decided${rule}`;
}

/**
 * The table of a rollout's deployments: agent, state, duration, store path, reason; for a staged
 * rollout also each agent's batch and its state in the rollout.
 */
export function deploymentTable(rollout: RolloutInfo): string {
  const staged = rollout.staged ?? null;
  const duration = (d: DeploymentInfo) => {
    if (!d.startedAt) return '-';
    const end = d.finishedAt ? Date.parse(d.finishedAt) : Date.now();
    return `${((end - Date.parse(d.startedAt)) / 1000).toFixed(1)}s`;
  };
  const reason = (d: DeploymentInfo) =>
    [d.reason, d.rebootRequired ? 'reboot required' : null].filter(Boolean).join('; ');
  if (!staged) {
    return formatTable(
      ['AGENT', 'STATUS', 'DURATION', 'CLOSURE', 'STORE PATH', 'REASON'],
      rollout.deployments.map((d) => [
        d.agent,
        d.state,
        duration(d),
        closureColumn(d),
        d.storePath,
        reason(d),
      ]),
    );
  }
  const batch = (d: DeploymentInfo) =>
    d.batch === null || d.batch === undefined
      ? '-'
      : `${d.batch + 1} (${staged.batches[d.batch]?.label ?? '?'})`;
  return formatTable(
    ['AGENT', 'BATCH', 'ROLLOUT STATE', 'STATUS', 'DURATION', 'CLOSURE', 'STORE PATH', 'REASON'],
    [...rollout.deployments]
      .sort((a, b) => (a.batch ?? 0) - (b.batch ?? 0) || (a.agent < b.agent ? -1 : 1))
      .map((d) => [
        d.agent,
        batch(d),
        d.rolloutState ?? '-',
        d.state,
        duration(d),
        closureColumn(d),
        d.storePath,
        reason(d),
      ]),
  );
}

/** `cairn deploy status`: where a rollout stands, batch by batch and agent by agent. */
export function describeRollout(rollout: RolloutInfo): string {
  const s = rollout.staged ?? null;
  if (!s) {
    return `Rollout:  ${rollout.id} (not staged: every agent got it at once)\n\n${deploymentTable(rollout)}`;
  }
  const rows: Array<[string, string]> = [
    ['Rollout', String(rollout.id)],
    ['State', s.state],
    ['Reason', s.reason ?? '-'],
    ['Waiting', s.waiting ?? '-'],
    ['Batch', s.batch < 0 ? 'none open yet' : batchName(s, s.batch)],
    ['Threshold', thresholdLine(s)],
    ['Deferred', String(s.deferred)],
    ['Finished', s.finishedAt ?? '-'],
  ];
  const width = Math.max(...rows.map(([k]) => k.length));
  const head = rows.map(([k, v]) => `${`${k}:`.padEnd(width + 1)} ${v}\n`).join('');
  const batches = formatTable(
    ['BATCH', 'LABEL', 'ADVANCE', 'AGENTS', 'STATE', 'OPENED'],
    s.batches.map((b) => [
      `${b.index + 1}/${s.batches.length}`,
      b.label,
      b.advance,
      String(b.agents),
      b.state,
      b.openedAt ?? '-',
    ]),
  );
  return `${head}\n${batches}\n${deploymentTable(rollout)}`;
}
