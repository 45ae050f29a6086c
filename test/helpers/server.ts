import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import type { RawBuilder } from 'kysely';
import pg from 'pg';
import pino from 'pino';
import { runCli } from '../../src/cli/run-cli.ts';
import { type DatabaseConfig, openDatabase } from '../../src/server/db/open-database.ts';
import { parseServerConfig } from '../../src/server/server-config.ts';
import { type RunningServer, startServer } from '../../src/server/start-server.ts';

/** A real server on 127.0.0.1:0 with a fresh data dir, and its admin token. */
export interface TestServer extends RunningServer {
  readonly dataDir: string;
  readonly adminToken: string;
  /** The database the server runs on: SQLite in the data dir, or a fresh PostgreSQL database. */
  readonly database: DatabaseConfig;
  /**
   * Runs one query on the server's database, whichever backend it is, such as
   * `` server.query<{ refs: string }>(sql`select refs from store_paths where store_path = ${p}`) ``.
   */
  query<T>(query: RawBuilder<T>): Promise<T[]>;
  /** Stops the server and removes its data dir (and its PostgreSQL database, if any). */
  stop(): Promise<void>;
}

/** A database made for one test, of the kind the suite runs against. */
export interface TestDatabase {
  readonly config: DatabaseConfig;
  /** Removes the database; safe to call twice. */
  drop(): Promise<void>;
}

/**
 * The PostgreSQL server the suite runs against, or undefined for SQLite. Any database on it will
 * do: it is only used to create and drop one fresh database per test server.
 */
export function testPostgresUrl(): string | undefined {
  return process.env.CAIRN_TEST_DATABASE_URL || undefined;
}

/**
 * Creates an empty database of the selected kind: a new PostgreSQL database on the server
 * CAIRN_TEST_DATABASE_URL names (so that tests running in parallel never share state), or else
 * an SQLite file in a new temporary directory.
 */
export async function createTestDatabase(): Promise<TestDatabase> {
  const adminUrl = testPostgresUrl();
  if (adminUrl === undefined) {
    const dir = await mkdtemp(join(tmpdir(), 'cairn-db-'));
    return {
      config: { kind: 'sqlite', file: join(dir, 'cairn.sqlite') },
      drop: () => rm(dir, { recursive: true, force: true }),
    };
  }
  // A random, lower-case name needs no quoting; the prefix lets CI sweep up databases left
  // behind by a test process that was killed before it could drop them.
  const name = `cairn_t_${randomBytes(8).toString('hex')}`;
  await withAdminClient(adminUrl, (client) => client.query(`CREATE DATABASE ${name}`));
  const url = new URL(adminUrl);
  url.pathname = `/${name}`;
  let dropped: Promise<void> | undefined;
  return {
    config: { kind: 'postgres', url: url.toString() },
    drop: () => {
      // FORCE (PostgreSQL 13+) ends connections a failed test may have left open.
      dropped ??= withAdminClient(adminUrl, (client) =>
        client.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`),
      );
      return dropped;
    },
  };
}

async function withAdminClient(url: string, use: (client: pg.Client) => Promise<unknown>): Promise<void> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    await use(client);
  } finally {
    await client.end();
  }
}

/**
 * PostgreSQL databases of data dirs kept for a later server (`keepDataDir`), by data dir: with
 * SQLite the state lives in the data dir, so a server restarted on the same dir must find the
 * same PostgreSQL database too.
 */
const keptDatabases = new Map<string, TestDatabase>();

/**
 * Starts a real Cairn server for a test. The database is SQLite in the data dir unless
 * CAIRN_TEST_DATABASE_URL names a PostgreSQL server, in which case each server gets a fresh
 * database of its own there (the suite runs against both). It listens on `listen` (HOST:PORT),
 * 127.0.0.1:0 unless a test needs another address, such as the host side of a veth pair.
 */
export async function startTestServer(
  options: {
    dataDir?: string;
    keepDataDir?: boolean;
    listen?: string;
    headersTimeoutMs?: number;
    failedAuthBurst?: number;
    agentConnectLimits?: { concurrent: number; waiting: number };
    /** A `--blob-store` URL, such as `s3://BUCKET?endpoint=...`; the data dir's blobs folder if unset. */
    blobStore?: string;
    /** Environment the config is read from (such as AWS_ACCESS_KEY_ID); empty if unset. */
    env?: Record<string, string>;
    /** `--metrics-listen`: an address serving `/metrics` without a token. */
    metricsListen?: string;
    /** `--metrics-per-agent`. */
    metricsPerAgent?: boolean;
  } = {},
): Promise<TestServer> {
  const dataDir = options.dataDir ?? (await mkdtemp(join(tmpdir(), 'cairn-server-')));
  const pgDatabase =
    testPostgresUrl() === undefined
      ? undefined
      : (keptDatabases.get(resolve(dataDir)) ?? (await createTestDatabase()));
  keptDatabases.delete(resolve(dataDir));
  const flags = {
    listen: options.listen ?? '127.0.0.1:0',
    dataDir,
    logLevel: 'silent',
    ...(options.headersTimeoutMs === undefined ? {} : { headersTimeoutMs: options.headersTimeoutMs }),
    ...(options.failedAuthBurst === undefined ? {} : { failedAuthBurst: options.failedAuthBurst }),
    ...(options.agentConnectLimits === undefined ? {} : { agentConnectLimits: options.agentConnectLimits }),
    ...(options.blobStore === undefined ? {} : { blobStore: options.blobStore }),
    ...(options.metricsListen === undefined ? {} : { metricsListen: options.metricsListen }),
    ...(options.metricsPerAgent === undefined ? {} : { metricsPerAgent: options.metricsPerAgent }),
  };
  const config = parseServerConfig(
    pgDatabase?.config.kind === 'postgres' ? { ...flags, database: pgDatabase.config.url } : flags,
    options.env ?? {},
  );
  let server: RunningServer;
  try {
    server = await startServer(config, { log: pino({ level: process.env.CAIRN_TEST_LOG ?? 'silent' }) });
  } catch (err) {
    await pgDatabase?.drop();
    throw err;
  }
  const adminToken = (await readFile(join(dataDir, 'admin-token'), 'utf8')).trim();
  return {
    ...server,
    url: server.url,
    port: server.port,
    close: server.close,
    dataDir,
    adminToken,
    database: config.database,
    query: async <T>(query: RawBuilder<T>) => {
      const { db } = openDatabase(config.database);
      try {
        return [...(await query.execute(db)).rows];
      } finally {
        await db.destroy();
      }
    },
    stop: async () => {
      await server.close();
      if (options.keepDataDir) {
        if (pgDatabase) keptDatabases.set(resolve(dataDir), pgDatabase);
        return;
      }
      await rm(dataDir, { recursive: true, force: true });
      await pgDatabase?.drop();
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

/**
 * Calls `method path` (such as `POST /agents`) in the default workspace's API as the admin and
 * returns the JSON answer; the test fails unless the status is 2xx.
 */
export async function adminApi(
  server: TestServer,
  method: string,
  path: string,
  body?: unknown,
): Promise<Record<string, unknown>> {
  const res = await fetch(`${server.url}/api/v1/workspaces/default${path}`, {
    method,
    headers: { Authorization: `Bearer ${server.adminToken}`, 'Content-Type': 'application/json' },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  assert.ok(res.ok, `${method} ${path}: ${res.status} ${await res.clone().text()}`);
  return (await res.json()) as Record<string, unknown>;
}
