import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { runCli } from '../../src/cli/run-cli.ts';
import { parseServerConfig } from '../../src/server/server-config.ts';
import { type RunningServer, startServer } from '../../src/server/start-server.ts';

/** A real server on 127.0.0.1:0 with a fresh data dir, and its admin token. */
export interface TestServer extends RunningServer {
  readonly dataDir: string;
  readonly adminToken: string;
  /** Stops the server and removes its data dir. */
  stop(): Promise<void>;
}

/**
 * Starts a real Cairn server for a test. The database is SQLite in the data dir unless
 * CAIRN_TEST_DATABASE_URL names a PostgreSQL database (the suite runs against both).
 */
export async function startTestServer(
  options: { dataDir?: string; keepDataDir?: boolean } = {},
): Promise<TestServer> {
  const dataDir = options.dataDir ?? (await mkdtemp(join(tmpdir(), 'cairn-server-')));
  const config = parseServerConfig({ listen: '127.0.0.1:0', dataDir, logLevel: 'silent' }, {});
  const server = await startServer(config, { log: pino({ level: process.env.CAIRN_TEST_LOG ?? 'silent' }) });
  const adminToken = (await readFile(join(dataDir, 'admin-token'), 'utf8')).trim();
  return {
    ...server,
    url: server.url,
    port: server.port,
    close: server.close,
    dataDir,
    adminToken,
    stop: async () => {
      await server.close();
      if (!options.keepDataDir) await rm(dataDir, { recursive: true, force: true });
    },
  };
}

/** Runs the CLI in-process and captures its output. */
export async function cli(
  args: readonly string[],
  env: Record<string, string | undefined>,
): Promise<{ code: number; stdout: string; stderr: string }> {
  let stdout = '';
  let stderr = '';
  const code = await runCli(args, {
    stdout: { write: (s: string) => (stdout += s) },
    stderr: { write: (s: string) => (stderr += s) },
    env: { ...process.env, ...env },
  });
  return { code, stdout, stderr };
}
