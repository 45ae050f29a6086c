import { homedir } from 'node:os';
import { join, resolve } from 'node:path';
import { CairnError } from '../lib/cairn-error.ts';
import { durationMs } from '../protocol/duration.ts';
import { type BlobStoreConfig, parseBlobStoreUrl } from './blob/blob-store-config.ts';
import type { DatabaseConfig } from './db/open-database.ts';
import { parseTrustedProxies } from './http/trusted-proxies.ts';
import type { LogFormat } from './log-format.ts';
import { DEFAULT_RETRY_SCHEDULE_MS, type WebhookSettings } from './webhooks/webhook-dispatcher.ts';

/** Everything `cairn server` is configured with, parsed once and frozen. */
export interface ServerConfig {
  readonly host: string;
  readonly port: number;
  readonly dataDir: string;
  readonly database: DatabaseConfig;
  /** Where NARs and other cache files live: `<data dir>/blobs` unless an S3 bucket is set. */
  readonly blobStore: BlobStoreConfig;
  /** The URL clients reach this server at, when it differs from the listen address (a proxy). */
  readonly publicUrl: string | undefined;
  readonly logLevel: string;
  /** `json`, or `pretty` (readable lines); by default pretty when standard output is a terminal. */
  readonly logFormat: LogFormat;
  /** Deployment logs are deleted this many days after the deployment finished. */
  readonly logRetentionDays: number;
  /** Largest NAR file accepted in one upload, in bytes. */
  readonly maxNarBytes: number;
  /** How often every cache is collected (`--gc-interval`, `CAIRN_GC_INTERVAL`); 0: never on its own. */
  readonly gcIntervalMs: number;
  /**
   * A NAR file no narinfo names is collected only once this old (`CAIRN_GC_UPLOAD_GRACE`, 1h by
   * default), so that an upload whose narinfo is still to come is safe.
   */
  readonly gcUploadGraceMs: number;
  /** A client must send its request headers within this (slow-header attacks). */
  readonly headersTimeoutMs: number;
  /** An idle keep-alive connection is closed after this. */
  readonly keepAliveTimeoutMs: number;
  /**
   * Proxies whose `X-Forwarded-For` names the client (`--trusted-proxy`): addresses or networks;
   * empty, the default, believes no header.
   */
  readonly trustedProxies: readonly string[];
  /** Failed authentications one address may make in a burst before it gets 429s (1 more per second). */
  readonly failedAuthBurst: number;
  /**
   * With PostgreSQL: how often each replica re-syncs its agents in case a notification between
   * replicas was lost (`CAIRN_EVENTS_BACKSTOP_SECONDS`, 30 by default).
   */
  readonly eventsBackstopMs: number;
  /**
   * With PostgreSQL: how long a replica's lease lasts without renewal, after which the other
   * replicas mark its agents offline (`CAIRN_REPLICA_LEASE_SECONDS`, 60 by default).
   */
  readonly replicaLeaseMs: number;
  /** Webhook delivery: private addresses, retries, timeout, poll, agent offline grace. */
  readonly webhooks: WebhookSettings;
  /**
   * A second address serving only `GET /metrics`, without a token (`--metrics-listen`,
   * `CAIRN_METRICS_LISTEN`); none by default: `/metrics` on the main address then needs a token.
   */
  readonly metricsListen: { readonly host: string; readonly port: number } | undefined;
  /** One series per agent in `/metrics` (`--metrics-per-agent`, `CAIRN_METRICS_PER_AGENT`); off by default. */
  readonly metricsPerAgent: boolean;
  /** Agent connections set up at once, and waiting; the hub's defaults unless set (tests). */
  readonly agentConnectLimits?: { readonly concurrent: number; readonly waiting: number } | undefined;
}

/** Flags of `cairn server`, as the CLI parsed them. */
export interface ServerFlags {
  listen?: string;
  dataDir?: string;
  database?: string;
  blobStore?: string;
  publicUrl?: string;
  logLevel?: string;
  logFormat?: string;
  logRetentionDays?: string;
  gcInterval?: string;
  trustedProxy?: string;
  metricsListen?: string;
  metricsPerAgent?: boolean;
  /** Not a command-line flag: tests shorten it. */
  headersTimeoutMs?: number;
  /** Not a command-line flag: failed authentications an address may make in a burst. */
  failedAuthBurst?: number;
  /** Not a command-line flag: agent connections set up at once, and waiting (tests). */
  agentConnectLimits?: { concurrent: number; waiting: number };
}

/** The default data directory: `$XDG_STATE_HOME/cairn`, or `~/.local/state/cairn`. */
export function defaultDataDir(env: NodeJS.ProcessEnv): string {
  const state = env.XDG_STATE_HOME || join(env.HOME || homedir(), '.local', 'state');
  return join(state, 'cairn');
}

/** Parses `HOST:PORT`, `[IPv6]:PORT` or `:PORT`. */
export function parseListen(text: string, flag = '--listen'): { host: string; port: number } {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]*)):(\d{1,5})$/.exec(text);
  const port = m ? Number(m[3]) : Number.NaN;
  if (!m || port > 65535) {
    throw new CairnError('INVALID_ARGUMENT', `Cannot use ${flag}: expected HOST:PORT (${text})`);
  }
  return { host: m[1] ?? (m[2] || '127.0.0.1'), port };
}

/**
 * Builds the server configuration from flags, falling back to `CAIRN_LISTEN`, `CAIRN_DATA_DIR`,
 * `CAIRN_DATABASE_URL`, `CAIRN_BLOB_STORE`, `CAIRN_PUBLIC_URL`, `CAIRN_TRUSTED_PROXY`, `CAIRN_METRICS_LISTEN`,
 * `CAIRN_METRICS_PER_AGENT` and `CAIRN_LOG_LEVEL` (and S3
 * credentials from `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`). All
 * problems are reported together.
 */
export function parseServerConfig(flags: ServerFlags, env: NodeJS.ProcessEnv): ServerConfig {
  const problems: string[] = [];
  let listen = { host: '127.0.0.1', port: 8080 };
  try {
    listen = parseListen(flags.listen ?? env.CAIRN_LISTEN ?? '127.0.0.1:8080');
  } catch (err) {
    problems.push((err as Error).message);
  }
  const dataDir = resolve(flags.dataDir ?? env.CAIRN_DATA_DIR ?? defaultDataDir(env));
  const dbUrl = flags.database ?? env.CAIRN_DATABASE_URL;
  let database: DatabaseConfig = { kind: 'sqlite', file: join(dataDir, 'cairn.sqlite') };
  if (dbUrl) {
    if (/^postgres(ql)?:\/\//.test(dbUrl)) database = { kind: 'postgres', url: dbUrl };
    else if (dbUrl.startsWith('sqlite:'))
      database = { kind: 'sqlite', file: resolve(dbUrl.slice('sqlite:'.length)) };
    else
      problems.push(
        `Cannot use --database: expected postgres://... or sqlite:FILE (${dbUrl.replace(/\/\/.*@/, '//***@')})`,
      );
  }
  const blobUrl = flags.blobStore ?? env.CAIRN_BLOB_STORE;
  let blobStore: BlobStoreConfig = { kind: 'local', dir: join(dataDir, 'blobs') };
  if (blobUrl) {
    const parsed = parseBlobStoreUrl(blobUrl, env);
    if ('problems' in parsed) problems.push(...parsed.problems);
    else blobStore = parsed.config;
  }
  const publicUrl = flags.publicUrl ?? env.CAIRN_PUBLIC_URL;
  if (publicUrl !== undefined && !/^https?:\/\/[^/]+/.test(publicUrl)) {
    problems.push(`Cannot use --public-url: expected an http(s) URL (${publicUrl})`);
  }
  const logLevel = flags.logLevel ?? env.CAIRN_LOG_LEVEL ?? 'info';
  if (!['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'].includes(logLevel)) {
    problems.push(
      `Cannot use --log-level: expected fatal, error, warn, info, debug, trace or silent (${logLevel})`,
    );
  }
  const logFormatText = flags.logFormat ?? env.CAIRN_LOG_FORMAT ?? 'auto';
  let logFormat: LogFormat = 'json';
  if (logFormatText === 'json' || logFormatText === 'pretty') logFormat = logFormatText;
  else if (logFormatText === 'auto') logFormat = process.stdout.isTTY ? 'pretty' : 'json';
  else problems.push(`Cannot use --log-format: expected json, pretty or auto (${logFormatText})`);
  const retentionText = flags.logRetentionDays ?? env.CAIRN_LOG_RETENTION_DAYS ?? '30';
  const logRetentionDays = Number(retentionText);
  if (!(Number.isFinite(logRetentionDays) && logRetentionDays > 0)) {
    problems.push(`Cannot use --log-retention-days: expected a positive number of days (${retentionText})`);
  }
  const gcIntervalText = flags.gcInterval ?? env.CAIRN_GC_INTERVAL ?? '1h';
  const gcIntervalMs = durationMs(gcIntervalText);
  if (gcIntervalMs === undefined || (gcIntervalMs !== 0 && gcIntervalMs < 1000)) {
    problems.push(
      `Cannot use --gc-interval: expected a duration such as 30m, 1h or 1d, or 0 to collect only when asked (${gcIntervalText})`,
    );
  }
  const graceText = env.CAIRN_GC_UPLOAD_GRACE ?? '1h';
  const gcUploadGraceMs = durationMs(graceText);
  if (gcUploadGraceMs === undefined) {
    problems.push(`Cannot use CAIRN_GC_UPLOAD_GRACE: expected a duration such as 30m or 1h (${graceText})`);
  }
  const backstopText = env.CAIRN_EVENTS_BACKSTOP_SECONDS ?? '30';
  const backstop = Number(backstopText);
  if (!(/^\d+(\.\d+)?$/.test(backstopText) && backstop >= 0.1 && backstop <= 3600)) {
    problems.push(
      `Cannot use CAIRN_EVENTS_BACKSTOP_SECONDS: expected a number of seconds from 0.1 to 3600 (${backstopText})`,
    );
  }
  const proxiesText = flags.trustedProxy ?? env.CAIRN_TRUSTED_PROXY;
  let trustedProxies: string[] = [];
  if (proxiesText !== undefined) {
    const parsed = parseTrustedProxies(proxiesText);
    if ('problems' in parsed) problems.push(...parsed.problems);
    else trustedProxies = parsed.entries;
  }
  const leaseText = env.CAIRN_REPLICA_LEASE_SECONDS ?? '60';
  const lease = Number(leaseText);
  if (!(/^\d+(\.\d+)?$/.test(leaseText) && lease >= 1 && lease <= 3600)) {
    problems.push(
      `Cannot use CAIRN_REPLICA_LEASE_SECONDS: expected a number of seconds from 1 to 3600 (${leaseText})`,
    );
  }
  const webhooks = parseWebhookSettings(env, problems, logRetentionDays * 86_400_000);
  const metricsListenText = flags.metricsListen ?? env.CAIRN_METRICS_LISTEN;
  let metricsListen: { host: string; port: number } | undefined;
  if (metricsListenText !== undefined && metricsListenText !== '') {
    try {
      metricsListen = parseListen(metricsListenText, '--metrics-listen');
    } catch (err) {
      problems.push((err as Error).message);
    }
  }
  let metricsPerAgent = flags.metricsPerAgent ?? false;
  const perAgentText = env.CAIRN_METRICS_PER_AGENT;
  if (flags.metricsPerAgent === undefined && perAgentText !== undefined && perAgentText !== '') {
    if (['1', 'true', 'yes'].includes(perAgentText)) metricsPerAgent = true;
    else if (!['0', 'false', 'no'].includes(perAgentText))
      problems.push(`Cannot use CAIRN_METRICS_PER_AGENT: expected 1 or 0 (true or false) (${perAgentText})`);
  }
  if (problems.length > 0) {
    throw new CairnError('INVALID_ARGUMENT', problems.join('\n'));
  }
  return Object.freeze({
    host: listen.host,
    port: listen.port,
    dataDir,
    database: Object.freeze(database),
    blobStore: Object.freeze(blobStore),
    publicUrl: publicUrl?.replace(/\/+$/, ''),
    logLevel,
    logFormat,
    logRetentionDays,
    gcIntervalMs: gcIntervalMs ?? 0,
    gcUploadGraceMs: gcUploadGraceMs ?? 0,
    maxNarBytes: 64 * 1024 ** 3,
    headersTimeoutMs: flags.headersTimeoutMs ?? 20_000,
    keepAliveTimeoutMs: 65_000,
    trustedProxies: Object.freeze(trustedProxies),
    failedAuthBurst: flags.failedAuthBurst ?? 30,
    eventsBackstopMs: Math.round(backstop * 1000),
    replicaLeaseMs: Math.round(lease * 1000),
    webhooks,
    metricsListen: metricsListen && Object.freeze(metricsListen),
    metricsPerAgent,
    agentConnectLimits: flags.agentConnectLimits,
  });
}

/**
 * Reads the webhook settings from `CAIRN_WEBHOOK_ALLOW_PRIVATE` (0 or 1), `CAIRN_WEBHOOK_RETRY_SCHEDULE`
 * (delays such as `5s,30s,2m`), `CAIRN_WEBHOOK_TIMEOUT_SECONDS` (15), `CAIRN_WEBHOOK_POLL_SECONDS` (5)
 * and `CAIRN_AGENT_OFFLINE_GRACE_SECONDS` (300); problems are added to `problems`.
 */
function parseWebhookSettings(
  env: NodeJS.ProcessEnv,
  problems: string[],
  retentionMs: number,
): WebhookSettings {
  const allowText = env.CAIRN_WEBHOOK_ALLOW_PRIVATE ?? '0';
  if (!['0', '1', 'true', 'false'].includes(allowText))
    problems.push(`Cannot use CAIRN_WEBHOOK_ALLOW_PRIVATE: expected 0 or 1 (${allowText})`);
  const scheduleText = env.CAIRN_WEBHOOK_RETRY_SCHEDULE;
  let retryScheduleMs: readonly number[] = DEFAULT_RETRY_SCHEDULE_MS;
  if (scheduleText !== undefined) {
    const delays = scheduleText.trim() === '' ? [] : scheduleText.split(',').map((t) => durationMs(t));
    if (delays.some((d) => d === undefined || d > 86_400_000) || delays.length > 30)
      problems.push(
        `Cannot use CAIRN_WEBHOOK_RETRY_SCHEDULE: expected up to 30 comma-separated delays of at most 1d, such as 5s,30s,2m (${scheduleText})`,
      );
    else retryScheduleMs = delays as number[];
  }
  const seconds = (name: string, fallback: string, min: number, max: number): number => {
    const text = env[name] ?? fallback;
    const n = Number(text);
    if (!(/^\d+(\.\d+)?$/.test(text) && n >= min && n <= max)) {
      problems.push(`Cannot use ${name}: expected a number of seconds from ${min} to ${max} (${text})`);
      return Number(fallback) * 1000;
    }
    return Math.round(n * 1000);
  };
  return Object.freeze({
    allowPrivate: allowText === '1' || allowText === 'true',
    retryScheduleMs: Object.freeze([...retryScheduleMs]),
    timeoutMs: seconds('CAIRN_WEBHOOK_TIMEOUT_SECONDS', '15', 0.1, 60),
    pollMs: seconds('CAIRN_WEBHOOK_POLL_SECONDS', '5', 0.1, 3600),
    agentOfflineGraceMs: seconds('CAIRN_AGENT_OFFLINE_GRACE_SECONDS', '300', 0.1, 86_400),
    // Kept as long as deployment logs.
    retentionMs,
  });
}
