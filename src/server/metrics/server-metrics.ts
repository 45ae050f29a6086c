import type { Kysely } from 'kysely';
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';
import { CAIRN_VERSION } from '../../lib/version.ts';
import { FINAL_STATES } from '../../protocol/deployment-state.ts';
import type { Database } from '../db/database-schema.ts';
import { agentSeriesText } from './agent-series.ts';
import { readAgentSnapshots, readFleetSnapshot } from './fleet-snapshot.ts';

/** What a cache request asked for: the `kind` label of the cache series. */
export type CacheRequestKind = 'nix-cache-info' | 'narinfo' | 'nar' | 'listing' | 'file' | 'other';

/** Options of {@link ServerMetrics}. */
export interface ServerMetricsOptions {
  readonly db: Kysely<Database>;
  /** One series per agent (`cairn_agent_*`): off by default, see docs/observability.md. */
  readonly perAgent: boolean;
  /** Agents holding a WebSocket to this process now. */
  readonly connectedAgents: () => number;
}

/** Deployment durations, in seconds: from a few seconds (a plain profile) to an hour (a large closure). */
const DURATION_BUCKETS = [1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600];

/**
 * Reasons of rollbacks, initialised at 0: the steps whose failure an agent rolls back from (the
 * profile had changed), and the rollbacks people and rollouts ask for.
 */
const ROLLBACK_REASONS = [
  'activate',
  'rollback-script',
  'health-check',
  'confirm',
  'requested',
  'rollout-revert',
];

/** Refusals of an agent's WebSocket, by error code: initialised so that `rate()` sees the first. */
const REFUSALS = ['unauthenticated', 'forbidden', 'too_many_requests', 'unavailable'];

/** Why a NAR or narinfo upload was refused after its content was checked. */
const VERIFICATION_CODES = new Set(['INVALID_NAR', 'UPLOAD_MISMATCH', 'UPLOAD_INCOMPLETE', 'ALREADY_EXISTS']);

/**
 * Cairn's Prometheus metrics (docs/observability.md). Counters and histograms count what this
 * process did, so with several replicas Prometheus sums them; the `cairn_agents` and
 * `cairn_rollouts` gauges (and the per-agent series) are read from the database at each scrape,
 * so every replica reports the same values.
 */
export class ServerMetrics {
  readonly registry = new Registry();
  readonly #o: ServerMetricsOptions;
  readonly #deployments: Counter<'state'>;
  readonly #duration: Histogram<'state'>;
  readonly #rollbacks: Counter<'reason'>;
  readonly #cacheRequests: Counter<'kind' | 'method' | 'code'>;
  readonly #cacheSent: Counter<'kind' | 'code'>;
  readonly #cacheReceived: Counter<'kind' | 'code'>;
  readonly #uploadFailures: Counter<'kind' | 'reason'>;
  readonly #connections: Counter;
  readonly #refused: Counter<'reason'>;
  readonly #agents: Gauge<'state'>;
  readonly #rollouts: Gauge<'state'>;
  /** The scrape in progress: scrapes that arrive meanwhile share its database reads. */
  #scrape: Promise<string> | undefined;

  constructor(options: ServerMetricsOptions) {
    this.#o = options;
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry });
    // Left out: prom-client's nodejs_active_* gauges. Their *_total forms are gauges named like
    // counters, which `promtool check metrics` rightly refuses; and all of them list every open
    // handle at each scrape, about 6 ms with 10,000 agent sockets, to count what
    // cairn_agent_connections_open says already. (process_open_fds also reads every descriptor,
    // about 10 ms then, but running out of descriptors is the first limit of a large fleet.)
    for (const name of [
      'nodejs_active_handles',
      'nodejs_active_handles_total',
      'nodejs_active_requests',
      'nodejs_active_requests_total',
      'nodejs_active_resources',
      'nodejs_active_resources_total',
    ])
      this.registry.removeSingleMetric(name);
    new Gauge({
      name: 'cairn_build_info',
      help: 'Always 1; the labels say which Cairn and Node.js this process runs.',
      labelNames: ['version', 'nodejs_version'],
      registers,
    }).set({ version: CAIRN_VERSION, nodejs_version: process.version }, 1);
    this.#deployments = new Counter({
      name: 'cairn_deployments_total',
      help: 'Deployments that reached a final state on this process, by that state.',
      labelNames: ['state'],
      registers,
    });
    for (const state of FINAL_STATES) this.#deployments.inc({ state }, 0);
    this.#duration = new Histogram({
      name: 'cairn_deployment_duration_seconds',
      help: "Time from an agent's first step of a deployment to its result, by final state.",
      labelNames: ['state'],
      buckets: DURATION_BUCKETS,
      registers,
    });
    this.#rollbacks = new Counter({
      name: 'cairn_rollbacks_total',
      help: 'Rollbacks: reason is the step whose failure made the agent roll back, "requested" for cairn deploy rollback, "rollout-revert" for a failed staged rollout reverting an agent.',
      labelNames: ['reason'],
      registers,
    });
    for (const reason of ROLLBACK_REASONS) this.#rollbacks.inc({ reason }, 0);
    this.#cacheRequests = new Counter({
      name: 'cairn_cache_requests_total',
      help: 'Binary cache requests answered, by what was asked for, HTTP method and status code.',
      labelNames: ['kind', 'method', 'code'],
      registers,
    });
    this.#cacheSent = new Counter({
      name: 'cairn_cache_sent_bytes_total',
      help: 'Bytes sent in answer to binary cache requests (headers included), by kind and status code.',
      labelNames: ['kind', 'code'],
      registers,
    });
    this.#cacheReceived = new Counter({
      name: 'cairn_cache_received_bytes_total',
      help: 'Bytes received in binary cache requests (uploads; headers included), by kind and status code.',
      labelNames: ['kind', 'code'],
      registers,
    });
    this.#uploadFailures = new Counter({
      name: 'cairn_cache_upload_verification_failures_total',
      help: 'Uploads refused once their content was checked (bad NAR, hash or size mismatch, missing references, another NarHash), by kind and error code.',
      labelNames: ['kind', 'reason'],
      registers,
    });
    this.#connections = new Counter({
      name: 'cairn_agent_connections_total',
      help: 'Agent WebSocket connections accepted by this process.',
      registers,
    });
    this.#refused = new Counter({
      name: 'cairn_agent_connections_refused_total',
      help: 'Agent WebSocket connections refused by this process, by error code (unavailable: too many connecting, or shutting down).',
      labelNames: ['reason'],
      registers,
    });
    for (const reason of REFUSALS) this.#refused.inc({ reason }, 0);
    new Gauge({
      name: 'cairn_agent_connections_open',
      help: 'Agent WebSocket connections open on this process.',
      registers,
      collect() {
        this.set(options.connectedAgents());
      },
    });
    this.#agents = new Gauge({
      name: 'cairn_agents',
      help: 'Agents of the whole fleet (from the database: the same on every replica), by state: online, offline, or revoked (its token revoked: retired).',
      labelNames: ['state'],
      registers,
    });
    this.#rollouts = new Gauge({
      name: 'cairn_rollouts',
      help: 'Staged rollouts (from the database: the same on every replica), by state.',
      labelNames: ['state'],
      registers,
    });
  }

  /** The content type of {@link render}'s text. */
  get contentType(): string {
    return this.registry.contentType;
  }

  /**
   * The metrics in Prometheus's text format, the database gauges read now. Scrapes that arrive
   * while one runs get its answer.
   */
  render(): Promise<string> {
    this.#scrape ??= this.#render().finally(() => {
      this.#scrape = undefined;
    });
    return this.#scrape;
  }

  async #render(): Promise<string> {
    const { db } = this.#o;
    const [fleet, agents] = await Promise.all([
      readFleetSnapshot(db),
      this.#o.perAgent ? readAgentSnapshots(db) : undefined,
    ]);
    this.#agents.set({ state: 'online' }, fleet.agents.online);
    this.#agents.set({ state: 'offline' }, fleet.agents.offline);
    this.#agents.set({ state: 'revoked' }, fleet.agents.revoked);
    this.#rollouts.reset();
    for (const r of fleet.rollouts) this.#rollouts.set({ state: r.state }, r.count);
    const text = await this.registry.metrics();
    return agents ? text + agentSeriesText(agents) : text;
  }

  /** Counts a deployment that reached final state `state` on this process. */
  deploymentFinished(state: string, step: string | null): void {
    this.#deployments.inc({ state });
    if (state === 'rolled-back') this.#rollbacks.inc({ reason: step ?? 'unknown' });
  }

  /** Records how long an agent took over a deployment, from its first step to its result. */
  deploymentDuration(state: string, seconds: number): void {
    if (seconds >= 0) this.#duration.observe({ state }, seconds);
  }

  /** Counts rollbacks someone asked for (`cairn deploy rollback`, the dashboard), or a rollout's reverts. */
  rollbacksCreated(reason: 'requested' | 'rollout-revert', count: number): void {
    if (count > 0) this.#rollbacks.inc({ reason }, count);
  }

  /** Counts an answered binary cache request and the bytes it moved. */
  cacheRequest(r: {
    kind: CacheRequestKind;
    method: string;
    code: number;
    sentBytes: number;
    receivedBytes: number;
  }): void {
    const method = r.method === 'GET' || r.method === 'HEAD' || r.method === 'PUT' ? r.method : 'other';
    const code = String(r.code);
    this.#cacheRequests.inc({ kind: r.kind, method, code });
    if (r.sentBytes > 0) this.#cacheSent.inc({ kind: r.kind, code }, r.sentBytes);
    if (r.receivedBytes > 0) this.#cacheReceived.inc({ kind: r.kind, code }, r.receivedBytes);
  }

  /** Counts an upload refused with error `code`, when it is one of a content check. */
  uploadRefused(kind: CacheRequestKind, code: string): void {
    if (VERIFICATION_CODES.has(code)) this.#uploadFailures.inc({ kind, reason: code.toLowerCase() });
  }

  /** Counts an agent connection accepted. */
  agentConnected(): void {
    this.#connections.inc();
  }

  /** Counts an agent connection refused with error `code` (`UNAUTHENTICATED`, ...). */
  agentRefused(code: string): void {
    this.#refused.inc({ reason: code.toLowerCase() });
  }
}
