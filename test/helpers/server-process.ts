import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { createServer } from 'node:net';
import { fileURLToPath } from 'node:url';

const MAIN = fileURLToPath(new URL('../../src/main.ts', import.meta.url));

/** A port that was free a moment ago: bound on 127.0.0.1:0, then released. */
export async function freePort(): Promise<number> {
  const server = createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : 0;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** `cairn server` running as a child process, so that a test can SIGKILL it. */
export interface ServerProcess {
  readonly url: string;
  readonly child: ChildProcess;
  /** Its log lines (pino's JSON), when started with a `logLevel`. */
  readonly lines: string[];
  /** Sends `signal` and waits for the process to exit. */
  kill(signal: NodeJS.Signals): Promise<void>;
}

/**
 * Starts `node --import tsx src/main.ts server` (or `cairn`, another `cairn` executable, such as
 * an installed one) on `port` with `dataDir` (and `database`, a `--database` value, when given),
 * and waits until `/healthz` answers 200.
 */
export async function spawnServer(options: {
  port: number;
  dataDir: string;
  database?: string;
  cairn?: string;
  /** Added to the environment it inherits. */
  env?: Record<string, string>;
  /** More `cairn server` flags, such as `['--blob-store', 's3://...']`. */
  args?: readonly string[];
  /** `--log-level` (silent by default); its log lines are collected in `lines`. */
  logLevel?: string;
}): Promise<ServerProcess> {
  const [command, ...prefix] =
    options.cairn === undefined ? [process.execPath, '--import', 'tsx', MAIN] : [options.cairn];
  const child = spawn(
    command!,
    [
      ...prefix,
      'server',
      '--listen',
      `127.0.0.1:${options.port}`,
      '--data-dir',
      options.dataDir,
      '--log-level',
      options.logLevel ?? 'silent',
      ...(options.database === undefined ? [] : ['--database', options.database]),
      ...(options.args ?? []),
    ],
    { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...options.env } },
  );
  const lines: string[] = [];
  let partial = '';
  child.stdout?.on('data', (d: Buffer) => {
    const parts = (partial + d.toString()).split('\n');
    partial = parts.pop() ?? '';
    lines.push(...parts);
  });
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => {
    stderr += d.toString();
  });
  const exited = once(child, 'exit');
  const url = `http://127.0.0.1:${options.port}`;
  const deadline = Date.now() + 20_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`cairn server exited ${child.exitCode}: ${stderr}`);
    try {
      const res = await fetch(`${url}/healthz`);
      if (res.status === 200) break;
    } catch {
      // Not listening yet.
    }
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`cairn server did not become healthy within 20 s: ${stderr}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return {
    url,
    child,
    lines,
    kill: async (signal) => {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      await exited;
    },
  };
}
