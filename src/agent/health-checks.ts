import { constants } from 'node:fs';
import { access, realpath, stat } from 'node:fs/promises';
import { isIP } from 'node:net';
import { isAbsolute, join } from 'node:path';
import { sleep } from '../lib/backoff.ts';
import { CairnError } from '../lib/cairn-error.ts';
import { runLines } from '../lib/run-lines.ts';
import { runProcess } from '../lib/run-process.ts';
import { type HealthCheck, healthCheckProgramProblem } from '../protocol/health-check.ts';

/** Most bytes of an HTTP check's answer the agent reads, and logs (first line only). */
const HTTP_EXCERPT_BYTES = 200;

/**
 * Which URLs HTTP checks may reach, from `CAIRN_AGENT_HEALTH_HTTP` in the agent's environment:
 * `any` (the default) or `loopback` (only `localhost`, 127.0.0.0/8 and ::1, so that a deployment
 * cannot make the agent read internal services on the network).
 * @throws CairnError INVALID_ARGUMENT for any other value.
 */
export function healthHttpPolicy(env: NodeJS.ProcessEnv): 'any' | 'loopback' {
  const value = env.CAIRN_AGENT_HEALTH_HTTP;
  if (value === undefined || value === '' || value === 'any') return 'any';
  if (value === 'loopback') return 'loopback';
  throw new CairnError(
    'INVALID_ARGUMENT',
    `Cannot start the agent: CAIRN_AGENT_HEALTH_HTTP must be "any" or "loopback", not ${JSON.stringify(value)}`,
  );
}

/** Whether `url`'s host is this machine's loopback (by name `localhost` or by address). */
function isLoopbackUrl(url: string): boolean {
  const host = new URL(url).hostname.replace(/^\[|\]$/g, '').toLowerCase();
  if (host === 'localhost' || host === '::1') return true;
  return isIP(host) === 4 && host.startsWith('127.');
}

/**
 * Resolves a command check's program to the file it runs, or says why it may not run: it must
 * name a path inside `storePath` (or inside a store path) without `..`, and, with every symlink
 * followed, be an executable file inside a store path of `closure`.
 */
export async function resolveCheckProgram(
  program: string,
  storePath: string,
  closure: ReadonlySet<string>,
): Promise<{ ok: true; path: string } | { ok: false; why: string }> {
  const problem = healthCheckProgramProblem(program);
  if (problem) return { ok: false, why: `refused to run it: the program ${problem}` };
  const path = isAbsolute(program) ? program : join(storePath, program);
  let real: string;
  try {
    real = await realpath(path);
  } catch (err) {
    return {
      ok: false,
      why: `refused to run it: ${path} does not exist (${(err as NodeJS.ErrnoException).code})`,
    };
  }
  const owner = real.split('/').slice(0, 4).join('/');
  if (!real.startsWith('/nix/store/') || !closure.has(owner)) {
    return {
      ok: false,
      why: `refused to run it: ${path} leads to ${real}, which is outside the deployed closure`,
    };
  }
  const isFile = await stat(real).then(
    (s) => s.isFile(),
    () => false,
  );
  const runnable =
    isFile &&
    (await access(real, constants.X_OK).then(
      () => true,
      () => false,
    ));
  if (!runnable) return { ok: false, why: `refused to run it: ${real} is not an executable file` };
  return { ok: true, path };
}

/** The store paths of `storePath`'s closure, as the local store knows them. */
async function closureOf(storePath: string, env: NodeJS.ProcessEnv): Promise<Set<string>> {
  const out = await runProcess('nix-store', ['--query', '--requisites', storePath], { env });
  return new Set(out.split('\n').filter((l) => l.startsWith('/nix/store/')));
}

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
  program: string | undefined,
  env: NodeJS.ProcessEnv,
  onLine: (line: string) => void,
): Promise<{ ok: true } | { ok: false; why: string }> {
  const signal = AbortSignal.timeout(check.timeoutSeconds * 1000);
  if ('http' in check) {
    try {
      const res = await fetch(check.http, { signal, redirect: 'manual' });
      const excerpt = (await readExcerpt(res)).split('\n')[0]!.trim();
      const answered = `answered ${res.status}${excerpt ? `: ${excerpt}` : ''}`;
      onLine(`${check.http} ${answered}`);
      return res.status === check.status ? { ok: true } : { ok: false, why: answered };
    } catch (err) {
      const why = signal.aborted
        ? `no answer within ${check.timeoutSeconds}s`
        : `${(err as Error).cause ?? (err as Error).message}`;
      onLine(`${check.http}: ${why}`);
      return { ok: false, why };
    }
  }
  const [cmd, ...args] =
    'command' in check ? [program!, ...check.command.slice(1)] : ['systemctl', 'is-active', ...check.systemd];
  const r = await runLines(cmd!, args, { env, onLine, signal });
  if (r.code === 0) return { ok: true };
  const printed = r.tail.at(-1);
  const ended = signal.aborted
    ? `timed out after ${check.timeoutSeconds}s`
    : `exited with ${r.code ?? r.signal}`;
  return { ok: false, why: `${ended}${printed ? `: ${printed}` : ''}` };
}

/** Reads at most {@link HTTP_EXCERPT_BYTES} of an answer's body, then drops the rest unread. */
async function readExcerpt(res: Response): Promise<string> {
  if (!res.body) return '';
  const reader = res.body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  try {
    while (size < HTTP_EXCERPT_BYTES) {
      const { done, value } = await reader.read();
      if (done) break;
      chunks.push(value);
      size += value.length;
    }
  } finally {
    await reader.cancel().catch(() => {});
  }
  return Buffer.concat(chunks).subarray(0, HTTP_EXCERPT_BYTES).toString('utf8');
}

/** Why `check` may not run at all on this agent, or undefined (an HTTP check off loopback under `loopback`). */
function httpRefusal(check: HealthCheck, policy: 'any' | 'loopback'): string | undefined {
  if (!('http' in check) || policy === 'any' || isLoopbackUrl(check.http)) return undefined;
  return 'refused to run it: this agent allows HTTP checks only on loopback (CAIRN_AGENT_HEALTH_HTTP=loopback)';
}

/**
 * Runs the health checks in order, each after its grace period and with its retries; stops at
 * the first that fails for good. Command paths are relative to the new closure, and a program
 * outside the closure (see {@link resolveCheckProgram}) fails its check without running.
 */
export async function runHealthChecks(
  checks: readonly HealthCheck[],
  storePath: string,
  options: {
    env: NodeJS.ProcessEnv;
    onLine: (line: string) => void;
    /** Which URLs HTTP checks may reach ({@link healthHttpPolicy}); `any` unless given. */
    http?: 'any' | 'loopback';
  },
): Promise<HealthOutcome> {
  let closure: Set<string> | undefined;
  for (const check of checks) {
    const name = describeCheck(check);
    let program: string | undefined;
    if ('command' in check) {
      closure ??= await closureOf(storePath, options.env);
      const resolved = await resolveCheckProgram(check.command[0]!, storePath, closure);
      if (!resolved.ok) return { ok: false, reason: `${name} failed: ${resolved.why}` };
      program = resolved.path;
    }
    const refusal = httpRefusal(check, options.http ?? 'any');
    if (refusal) return { ok: false, reason: `${name} failed: ${refusal}` };
    if (check.graceSeconds > 0) {
      options.onLine(`${name}: waiting ${check.graceSeconds}s grace period`);
      await sleep(check.graceSeconds * 1000);
    }
    let last = '';
    for (let i = 0; i <= check.retries; i++) {
      if (i > 0) await sleep(check.intervalSeconds * 1000);
      options.onLine(`${name}: attempt ${i + 1} of ${check.retries + 1}`);
      const r = await attempt(check, program, options.env, options.onLine);
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
