import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';

/** How a command ended. */
export interface RunLinesResult {
  /** Exit code, or null when killed by a signal. */
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  /** The last lines of output, for error messages. */
  readonly tail: readonly string[];
}

/** Options of {@link runLines}. */
export interface RunLinesOptions {
  readonly env?: NodeJS.ProcessEnv;
  readonly cwd?: string;
  /** Receives each line of stdout and stderr as it comes. */
  readonly onLine: (line: string) => void;
  /**
   * Stops the command: its whole process group is sent SIGTERM (SIGKILL 5 s later), so what it
   * started (a hung curl, say) stops with it. The result is then that of the killed command.
   */
  readonly signal?: AbortSignal;
  /** Runs the command in a new session (its own process group), so it survives its parent's group being signalled. */
  readonly detached?: boolean;
}

/** How long a stopped command has between SIGTERM and SIGKILL. */
const KILL_AFTER_MS = 5000;

/**
 * Runs a command, passing every line of its output to `onLine` as it comes, and resolves with
 * how it ended. It never rejects for a non-zero exit: the caller decides what an exit code means.
 * A command that cannot start resolves with code 127 and the reason as its last line.
 */
export function runLines(
  cmd: string,
  args: readonly string[],
  options: RunLinesOptions,
): Promise<RunLinesResult> {
  return new Promise((resolve) => {
    const tail: string[] = [];
    const take = (line: string) => {
      tail.push(line);
      if (tail.length > 20) tail.shift();
      options.onLine(line);
    };
    // A command that can be stopped gets a process group of its own, so that stopping it
    // reaches its children too.
    const child = spawn(cmd, args, {
      env: options.env ?? process.env,
      cwd: options.cwd,
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: (options.detached ?? false) || options.signal !== undefined,
    });
    const stop = () => stopGroup(child.pid);
    if (options.signal?.aborted) stop();
    else options.signal?.addEventListener('abort', stop, { once: true });
    let pending = 2;
    let exit: { code: number | null; signal: NodeJS.Signals | null } | undefined;
    const finish = () => {
      if (pending === 0 && exit) resolve({ ...exit, tail });
    };
    for (const stream of [child.stdout, child.stderr]) {
      const rl = createInterface({ input: stream, crlfDelay: Number.POSITIVE_INFINITY });
      rl.on('line', take);
      rl.on('close', () => {
        pending--;
        finish();
      });
    }
    child.on('error', (err) => {
      take(`cannot run ${cmd}: ${err.message}`);
      exit = { code: 127, signal: null };
      pending = 0;
      finish();
    });
    child.on('exit', (code, signal) => {
      options.signal?.removeEventListener('abort', stop);
      exit ??= { code, signal };
      finish();
    });
  });
}

/** Sends SIGTERM to a process group, and SIGKILL to what is left of it a little later. */
function stopGroup(pid: number | undefined): void {
  if (pid === undefined) return;
  const kill = (signal: NodeJS.Signals) => {
    try {
      process.kill(-pid, signal);
    } catch {
      // The group is gone already.
    }
  };
  kill('SIGTERM');
  setTimeout(() => kill('SIGKILL'), KILL_AFTER_MS).unref();
}
