import { isAbsolute, join } from 'node:path';
import { sleep } from '../lib/backoff.ts';
import { runLines } from '../lib/run-lines.ts';
import type { HealthCheck } from '../protocol/health-check.ts';

/** How the health checks ended; a failure names the check and what it printed. */
export type HealthOutcome = { readonly ok: true } | { readonly ok: false; readonly reason: string };

/** A short description of a check, for logs and reasons. */
export function describeCheck(check: HealthCheck): string {
  if ('command' in check) return `command check ${check.command.join(' ')}`;
  if ('http' in check) return `HTTP check ${check.http} (expecting ${check.status})`;
  return `systemd check ${check.systemd.join(' ')}`;
}

/** One attempt: healthy, or what was wrong and the last thing it printed. */
async function attempt(
  check: HealthCheck,
  storePath: string,
  env: NodeJS.ProcessEnv,
  onLine: (line: string) => void,
): Promise<{ ok: true } | { ok: false; why: string }> {
  const signal = AbortSignal.timeout(check.timeoutSeconds * 1000);
  if ('http' in check) {
    try {
      const res = await fetch(check.http, { signal, redirect: 'manual' });
      const body = (await res.text()).slice(0, 200).trim();
      onLine(`${check.http} answered ${res.status}${body ? `: ${body.split('\n')[0]}` : ''}`);
      return res.status === check.status
        ? { ok: true }
        : { ok: false, why: `answered ${res.status}${body ? `: ${body.split('\n')[0]}` : ''}` };
    } catch (err) {
      const why = signal.aborted
        ? `no answer within ${check.timeoutSeconds}s`
        : `${(err as Error).cause ?? (err as Error).message}`;
      onLine(`${check.http}: ${why}`);
      return { ok: false, why };
    }
  }
  const [cmd, ...args] =
    'command' in check
      ? [
          isAbsolute(check.command[0]!) ? check.command[0]! : join(storePath, check.command[0]!),
          ...check.command.slice(1),
        ]
      : ['systemctl', 'is-active', ...check.systemd];
  const r = await runLines(cmd!, args, { env, onLine, signal });
  if (r.code === 0) return { ok: true };
  const printed = r.tail.at(-1);
  const ended = signal.aborted
    ? `timed out after ${check.timeoutSeconds}s`
    : `exited with ${r.code ?? r.signal}`;
  return { ok: false, why: `${ended}${printed ? `: ${printed}` : ''}` };
}

/**
 * Runs the health checks in order, each after its grace period and with its retries; stops at
 * the first that fails for good. Command paths are relative to the new closure.
 */
export async function runHealthChecks(
  checks: readonly HealthCheck[],
  storePath: string,
  options: { env: NodeJS.ProcessEnv; onLine: (line: string) => void },
): Promise<HealthOutcome> {
  for (const check of checks) {
    const name = describeCheck(check);
    if (check.graceSeconds > 0) {
      options.onLine(`${name}: waiting ${check.graceSeconds}s grace period`);
      await sleep(check.graceSeconds * 1000);
    }
    let last = '';
    for (let i = 0; i <= check.retries; i++) {
      if (i > 0) await sleep(check.intervalSeconds * 1000);
      options.onLine(`${name}: attempt ${i + 1} of ${check.retries + 1}`);
      const r = await attempt(check, storePath, options.env, options.onLine);
      if (r.ok) {
        options.onLine(`${name}: healthy`);
        last = '';
        break;
      }
      last = r.why;
    }
    if (last) return { ok: false, reason: `${name} failed after ${check.retries + 1} attempt(s): ${last}` };
  }
  return { ok: true };
}
