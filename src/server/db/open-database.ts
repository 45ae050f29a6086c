import { closeSync, existsSync, fchmodSync, mkdirSync, openSync } from 'node:fs';
import { dirname } from 'node:path';
import SqliteDatabase from 'better-sqlite3';
import {
  HandleEmptyInListsPlugin,
  Kysely,
  type KyselyPlugin,
  PostgresDialect,
  replaceWithNoncontingentExpression,
} from 'kysely';
import pg from 'pg';
import type { Database } from './database-schema.ts';
import type { SqlDialect } from './migrations.ts';
import { RejectNulPlugin } from './reject-nul-plugin.ts';
import { TransactionalSqliteDialect } from './transactional-sqlite-dialect.ts';

/** Where the state lives: an SQLite file, or a PostgreSQL connection string. */
export type DatabaseConfig =
  | { readonly kind: 'sqlite'; readonly file: string }
  | { readonly kind: 'postgres'; readonly url: string; readonly maxConnections?: number };

/** An open database with the dialect it speaks. */
export interface OpenDatabase {
  readonly db: Kysely<Database>;
  readonly dialect: SqlDialect;
  /**
   * SQLite only: copies the database to `file` with SQLite's online backup, through the
   * connection the server writes on, so that the copy is one consistent state however many
   * writes happen meanwhile.
   */
  readonly backup?: (file: string) => Promise<void>;
}

/** Options of {@link openDatabase}. */
export interface OpenDatabaseOptions {
  /**
   * Told when an idle PostgreSQL connection fails (the server restarted, a proxy timed it out).
   * The pool has already dropped that connection and opens a new one when next needed, so this
   * is for logging only. Defaults to a process warning.
   */
  onIdleConnectionError?: (err: Error) => void;
}

/**
 * Creates the SQLite file, if it is new, readable and writable by its owner only, whatever the
 * umask: it holds token hashes and cache signing keys. SQLite gives its `-wal` and `-shm` files
 * the database file's mode. An existing file keeps the mode it has.
 */
function createPrivately(file: string): void {
  mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
  if (existsSync(file)) return;
  let fd: number;
  try {
    fd = openSync(file, 'wx', 0o600);
  } catch (err) {
    // Created by another process a moment ago: it decided the mode.
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return;
    throw err;
  }
  try {
    // The mode given to open is masked by the umask; this one is not.
    fchmodSync(fd, 0o600);
  } finally {
    closeSync(fd);
  }
}

/**
 * Opens the database. SQLite runs in WAL mode with a busy timeout, so readers never block the
 * writer; PostgreSQL's int8 columns come back as numbers (every value Cairn stores fits in 2^53).
 * Both get the same plugins, so that queries the two would answer differently are made alike.
 */
export function openDatabase(config: DatabaseConfig, options: OpenDatabaseOptions = {}): OpenDatabase {
  if (config.kind === 'sqlite') {
    if (config.file !== ':memory:') createPrivately(config.file);
    const sqlite = new SqliteDatabase(config.file);
    sqlite.pragma('journal_mode = WAL');
    sqlite.pragma('synchronous = NORMAL');
    sqlite.pragma('busy_timeout = 5000');
    sqlite.pragma('foreign_keys = ON');
    return {
      db: new Kysely<Database>({
        dialect: new TransactionalSqliteDialect({ database: cachingStatements(sqlite) }),
        plugins: plugins(),
      }),
      dialect: 'sqlite',
      backup: async (file) => {
        await sqlite.backup(file);
      },
    };
  }
  const pool = new pg.Pool({
    connectionString: config.url,
    max: config.maxConnections ?? 10,
    types: {
      getTypeParser: (oid: number, format?: 'text' | 'binary') =>
        oid === pg.types.builtins.INT8
          ? (v: string) => Number(v)
          : pg.types.getTypeParser(oid, format as 'text'),
    } as pg.CustomTypesConfig,
  });
  // A pool re-emits the error of an idle connection, and an 'error' event nobody listens to
  // kills the process: without this, restarting PostgreSQL would take every replica down.
  pool.on(
    'error',
    options.onIdleConnectionError ??
      ((err) => process.emitWarning(`Cannot keep an idle PostgreSQL connection: ${err.message}`)),
  );
  return {
    db: new Kysely<Database>({ dialect: new PostgresDialect({ pool }), plugins: plugins() }),
    dialect: 'postgres',
  };
}

function plugins(): KyselyPlugin[] {
  return [
    // Text with NUL: PostgreSQL cannot store it, SQLite can; both refuse it (see the plugin).
    new RejectNulPlugin(),
    // `x in ()`: SQLite reads it as false, PostgreSQL as a syntax error; both now get `1 = 0`.
    new HandleEmptyInListsPlugin({ strategy: replaceWithNoncontingentExpression }),
  ];
}

/** better-sqlite3 with its prepared statements kept by SQL text, so a repeated query is not parsed again. */
function cachingStatements(sqlite: SqliteDatabase.Database): {
  close(): void;
  prepare(sql: string): SqliteDatabase.Statement;
} {
  const statements = new Map<string, SqliteDatabase.Statement>();
  return {
    close: () => {
      sqlite.close();
    },
    prepare: (sql) => {
      let stmt = statements.get(sql);
      // A statement still being iterated (Kysely's stream()) cannot run again meanwhile.
      if (stmt === undefined || stmt.busy) {
        stmt = sqlite.prepare(sql);
        if (statements.size >= 1000) statements.clear();
        statements.set(sql, stmt);
      }
      return stmt;
    },
  };
}
