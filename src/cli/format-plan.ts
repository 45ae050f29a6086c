import { formatClosureDiff } from '../nix/closure-diff.ts';
import {
  type DeploymentDiff,
  type MachinePlanInfo,
  planBlocked,
  planUnheard,
  type RolloutPlan,
} from '../protocol/api-schemas.ts';
import { formatBytes } from './format-table.ts';

type AgentPlan = RolloutPlan['agents'][number];

/**
 * Exit codes of `deploy plan` (and of `deploy activate --plan` when it stops at the plan): every
 * machine answered and nothing stands in the way; a machine reports a blocker (not enough disk,
 * paths no cache has, a failed dry-activate); some machine was not heard (offline, too old,
 * timed out), so its part is the server's estimate.
 */
export const PLAN_EXIT = { ok: 0, blocked: 1, unheard: 3 } as const;

/** The exit code of a plan ({@link PLAN_EXIT}). */
export function planExitCode(plan: RolloutPlan): number {
  const machines = plan.agents.flatMap((a) => (a.machine ? [a.machine] : []));
  if (machines.some(planBlocked)) return PLAN_EXIT.blocked;
  if (machines.some(planUnheard)) return PLAN_EXIT.unheard;
  return PLAN_EXIT.ok;
}

/** `Download: 3 path(s), 1.2 MiB unpacked, 400 KiB compressed` from the server's estimate. */
function estimateLine(a: AgentPlan): string {
  const dl = a.download;
  const compressed =
    dl.filePaths === 0
      ? ''
      : `, ${formatBytes(dl.fileSize)} compressed${dl.filePaths < dl.paths ? ` for ${dl.filePaths} of them` : ''}`;
  return `${dl.paths} path(s), ${formatBytes(dl.narSize)} unpacked${compressed}`;
}

/** What `dry-activate` said, in a line or a few. */
function dryActivateLines(m: MachinePlanInfo): string[] {
  const d = m.dryActivate;
  if (!d) return [];
  if (d.status !== 'done') return [`Dry-activate: ${d.status === 'failed' ? 'FAILED: ' : ''}${d.reason}`];
  const parts = (['stop', 'restart', 'start', 'reload'] as const)
    .filter((k) => d[k].length > 0)
    .map((k) => `would ${k} ${d[k].join(', ')}`);
  if (d.rebootRequired) parts.push('reboot required (new kernel, initrd or init system)');
  return [
    `Dry-activate: ${parts.length > 0 ? parts.join('; ') : 'no unit would change'}`,
    ...d.notes.map((n) => `  ${n}`),
  ];
}

/** The lines about what the machine itself said, after the package diff. */
function machineLines(a: AgentPlan, m: MachinePlanInfo): string[] {
  if (m.status === 'unchanged') return [];
  if (m.status !== 'answered' || !m.download)
    return [`Download: ${estimateLine(a)} (server-side estimate, an upper bound)`, `Machine: ${m.message}`];
  const dl = m.download;
  const sizes =
    dl.paths.length === 0
      ? ''
      : `, ${formatBytes(dl.narSize)} unpacked, ${formatBytes(dl.fileSize)} compressed${
          dl.unknownSizes > 0 ? ` (${dl.unknownSizes} of them of unknown size: in no workspace cache)` : ''
        }`;
  const lines = [
    `Download: ${dl.paths.length}${m.truncated ? '+' : ''} path(s)${sizes} (the machine's own count)`,
    ...dl.paths.map((p) => `  ${p.path}`),
  ];
  if (m.unavailable.length > 0)
    lines.push(
      `In no cache (the deployment would fail): ${m.unavailable.length} path(s)`,
      ...m.unavailable.map((p) => `  ${p}`),
    );
  if (m.freeBytes !== null)
    lines.push(
      `Disk: ${formatBytes(m.freeBytes)} free on /nix/store${m.diskOk === false ? ': NOT ENOUGH for the download (with a 10% margin)' : ''}`,
    );
  lines.push(...dryActivateLines(m));
  return lines;
}

/** A plan as people read it: per agent, the package diff, the download, the disk and dry-activate. */
export function formatPlan(plan: RolloutPlan): string {
  let out = '';
  for (const a of plan.agents) {
    out += `== ${a.agent}\n`;
    if (a.unchanged) {
      out += `already runs ${a.proposed.storePath}: nothing to do\n\n`;
      continue;
    }
    out += formatClosureDiff(a.diff, {
      before: a.current.storePath ?? '(nothing yet)',
      after: a.proposed.storePath ?? '',
    });
    const lines = a.machine ? machineLines(a, a.machine) : [`Download: ${estimateLine(a)}`];
    out += lines.map((l) => `${l}\n`).join('');
    for (const reported of [reportedNote('current', a.current), reportedNote('new', a.proposed)]) {
      if (reported) out += `Note: ${reported}\n`;
    }
    if (a.current.missing > 0 || a.proposed.missing > 0) {
      const notes = [
        a.current.missing > 0 ? `${a.current.missing} path(s) of the current closure are in no cache` : '',
        a.proposed.missing > 0 ? `${a.proposed.missing} path(s) of the new closure are in no cache` : '',
      ];
      out += `Note: ${notes.filter(Boolean).join('; ')}\n`;
    }
    out += '\n';
  }
  return out;
}

/** Says that a side of a diff or plan is an agent's unverified report; undefined for any other. */
export function reportedNote(label: string, side: DeploymentDiff['from']): string | undefined {
  if (side.source !== 'agent') return undefined;
  return `the ${label} closure is as agent '${side.reportedBy ?? side.agent}' reported it, not verified by a cache`;
}
