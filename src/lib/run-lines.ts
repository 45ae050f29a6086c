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
  readonly signal?: AbortSignal;
  /** Runs the command in a new session (its own process group), so it survives its parent's group being signalled. */
  readonly detached?: boolean;
}

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
    const child = spawn(cmd, args, {
      env: options.env ?? process.env,
      cwd: options.cwd,
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: options.detached ?? false,
      signal: options.signal,
    });
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
      exit ??= { code, signal };
      finish();
    });
  });
}
