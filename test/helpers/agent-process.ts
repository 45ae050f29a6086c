import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync } from 'node:fs';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { nixEnv } from './nix.ts';

const MAIN = fileURLToPath(new URL('../../src/main.ts', import.meta.url));

/**
 * The agents' name locks (CAIRN_AGENT_LOCK_DIR), one directory per test process: agents of one
 * test file exclude each other by name, as on one machine, while test files (and other checkouts)
 * running at once may reuse names such as `web1`.
 */
export const AGENT_LOCK_DIR = mkdtempSync(join(tmpdir(), 'cairn-agent-locks-'));

/** A real `cairn deploy agent` process, with its log lines collected. */
export interface AgentProcess {
  readonly child: ChildProcess;
  readonly lines: string[];
  /** Resolves with the first log line (present or future) matching `re`; rejects after `timeoutMs`. */
  waitFor(re: RegExp, timeoutMs?: number): Promise<string>;
  /** Stops the agent with SIGTERM and waits for it to exit. */
  stop(): Promise<void>;
}

/**
 * Starts an agent as its own process, as on a machine: its own state dir and its own Nix
 * narinfo cache (XDG_CACHE_HOME), so it sees the binary cache as a separate machine would.
 * `wrap` is a command that runs the agent, such as `['ip', 'netns', 'exec', ns]` to put it in a
 * network namespace; it must exec the agent (not fork it), so that signals reach the agent.
 */
export async function startAgent(options: {
  name: string;
  profile: string;
  server: string;
  /** Its CAIRN_AGENT_TOKEN; none for an agent that enrols or uses the token an enrolment stored. */
  token?: string;
  /** More arguments of `cairn deploy agent`, such as `--enrol`. */
  args?: readonly string[];
  /** Its state dir; a new temporary one by default, and null for the agent's own default. */
  stateDir?: string | null;
  wrap?: readonly string[];
  /** More environment for the agent (such as CAIRN_AGENT_CURRENT_SYSTEM). */
  env?: Record<string, string>;
}): Promise<AgentProcess> {
  const stateDir =
    options.stateDir === null ? null : (options.stateDir ?? (await mkdtemp(join(tmpdir(), 'cairn-agent-'))));
  const argv = [
    process.execPath,
    '--import',
    'tsx',
    MAIN,
    'deploy',
    'agent',
    options.name,
    options.profile,
    ...(stateDir === null ? [] : ['--state-dir', stateDir]),
    ...(options.args ?? []),
  ];
  const [cmd, ...args] = [...(options.wrap ?? []), ...argv] as [string, ...string[]];
  const env = nixEnv({
    CAIRN_SERVER: options.server,
    ...(options.token === undefined ? {} : { CAIRN_AGENT_TOKEN: options.token }),
    CAIRN_AGENT_LOCK_DIR: AGENT_LOCK_DIR,
    XDG_CACHE_HOME: join(stateDir ?? (await mkdtemp(join(tmpdir(), 'cairn-agent-cache-'))), 'xdg-cache'),
    // Never the system the machine running the tests runs: a rollback returns to the running
    // NixOS system, which on a developer's NixOS would be their own.
    CAIRN_AGENT_CURRENT_SYSTEM: join(tmpdir(), 'cairn-tests-no-current-system'),
    CAIRN_AGENT_BOOTED_SYSTEM: join(tmpdir(), 'cairn-tests-no-booted-system'),
    ...options.env,
  });
  if (stateDir === null) delete env.CAIRN_AGENT_STATE_DIR;
  const child = spawn(cmd, args, {
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const lines: string[] = [];
  const waiters: Array<{ re: RegExp; resolve: (l: string) => void }> = [];
  let buffer = '';
  const onData = (d: Buffer) => {
    buffer += d.toString();
    let nl = buffer.indexOf('\n');
    while (nl >= 0) {
      const line = buffer.slice(0, nl);
      buffer = buffer.slice(nl + 1);
      lines.push(line);
      if (process.env.CAIRN_TEST_LOG) process.stderr.write(`[agent ${options.name}] ${line}\n`);
      for (const w of [...waiters]) {
        if (w.re.test(line)) {
          waiters.splice(waiters.indexOf(w), 1);
          w.resolve(line);
        }
      }
      nl = buffer.indexOf('\n');
    }
  };
  child.stdout.on('data', onData);
  child.stderr.on('data', onData);
  const exited = once(child, 'exit');
  return {
    child,
    lines,
    waitFor: (re, timeoutMs = 20_000) => {
      const found = lines.find((l) => re.test(l));
      if (found) return Promise.resolve(found);
      return new Promise((resolve, reject) => {
        const timer = setTimeout(
          () =>
            reject(
              new Error(
                `agent ${options.name}: no log line matching ${re} within ${timeoutMs} ms:\n${lines.join('\n')}`,
              ),
            ),
          timeoutMs,
        );
        waiters.push({
          re,
          resolve: (l) => {
            clearTimeout(timer);
            resolve(l);
          },
        });
      });
    },
    stop: async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      await exited;
    },
  };
}
