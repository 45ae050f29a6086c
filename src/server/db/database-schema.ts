import type { Generated } from 'kysely';

/** Rows of `workspaces`: tenants. A fresh server has one, `default`. */
export interface WorkspacesTable {
  id: Generated<number>;
  name: string;
  created_at: number;
}

/** Rows of `tokens`: secrets are never stored, only their SHA-256. */
export interface TokensTable {
  id: string;
  workspace_id: number;
  name: string;
  /** Hex SHA-256 of the whole token string. */
  hash: string;
  /** JSON array of scope strings (see `src/protocol/token-scope.ts`). */
  scopes: string;
  created_at: number;
  expires_at: number | null;
  revoked_at: number | null;
  last_used_at: number | null;
}

/** Rows of `caches`: binary caches with their signing keys. */
export interface CachesTable {
  id: Generated<number>;
  workspace_id: number;
  name: string;
  public: number;
  /** Nix secret key, `name:base64(seed || public)`. */
  secret_key: string;
  /** Nix public key, `name:base64(public)`. */
  public_key: string;
  created_at: number;
  /** Keep what was pushed or fetched this recently; null: the server's default (migration 014). */
  retention_seconds: number | null;
  /** Stored bytes above which least recently used paths go first; null: no quota. */
  quota_bytes: number | null;
  /** The replica collecting the cache now, and until when its lease holds. */
  gc_lease_holder: string | null;
  gc_lease_until: number | null;
}

/** Rows of `cache_pins`: paths whose closure the collector never removes (migration 014). */
export interface CachePinsTable {
  cache_id: number;
  hash_part: string;
  store_path: string;
  created_at: number;
  created_by: string;
  /** When the pin lapses; null: until unpinned. */
  expires_at: number | null;
}

/** Rows of `cache_gc_runs`: one collection of one cache (migration 014). */
export interface CacheGcRunsTable {
  id: Generated<number>;
  cache_id: number;
  /** `schedule` or `manual`. */
  trigger: string;
  started_at: number;
  finished_at: number | null;
  paths_removed: Generated<number>;
  nar_files_removed: Generated<number>;
  bytes_freed: Generated<number>;
  error: string | null;
}

/** Rows of `cache_keys`: every signing key a cache has had; see migration 016. */
export interface CacheKeysTable {
  id: Generated<number>;
  cache_id: number;
  /** The key's name, as in its `Sig` lines. */
  name: string;
  /** Nix secret key; empty once retired. */
  secret_key: string;
  public_key: string;
  created_at: number;
  retired_at: number | null;
}

/**
 * Rows of `nar_files`: NAR files uploaded to a cache, with the hashes measured while they
 * streamed in, so that a narinfo can be checked against them without reading the file again.
 */
export interface NarFilesTable {
  cache_id: number;
  /** File name under `nar/`, such as `<filehash>.nar.xz`. */
  file_name: string;
  compression: string;
  /** `sha256:<nix32>` of the file as stored. */
  file_hash: string;
  file_size: number;
  /** `sha256:<nix32>` of the uncompressed NAR. */
  nar_hash: string;
  nar_size: number;
  created_at: number;
}

/** Rows of `store_paths`: the path index of each cache, one row per published narinfo. */
export interface StorePathsTable {
  cache_id: number;
  hash_part: string;
  store_path: string;
  nar_hash: string;
  nar_size: number;
  file_name: string;
  file_hash: string | null;
  file_size: number | null;
  compression: string;
  /** Space-separated base names, as in the narinfo. */
  refs: string;
  deriver: string | null;
  system: string | null;
  ca: string | null;
  /** The narinfo as served: the client's fields plus every signature, the cache's included. */
  narinfo: string;
  uploaded_at: number;
  last_accessed_at: number;
}

/** Rows of `cache_files`: opaque files kept for Nix (`log/`, `realisations/`, `debuginfo/`). */
export interface CacheFilesTable {
  cache_id: number;
  /** Path under the cache, such as `log/<drv>` or `realisations/<id>.doi`. */
  name: string;
  size: number;
  created_at: number;
}

/** Rows of `agents`: managed machines, with what each last reported. */
export interface AgentsTable {
  id: Generated<number>;
  workspace_id: number;
  name: string;
  token_id: string;
  created_at: number;
  last_seen_at: number | null;
  online: number;
  store_path: string | null;
  generation: number | null;
  kind: string | null;
  system: string | null;
  hostname: string | null;
  agent_version: string | null;
  nix_version: string | null;
  profile: string | null;
  /** Taken anew by each hello: the newest connection of the agent holds the highest (migration 11). */
  connection_epoch: Generated<number>;
  /** The replica holding the agent's newest connection (PostgreSQL replicas; migration 12). */
  replica_id: string | null;
  /** When the agent last went offline (null while it has never been offline since migration 013). */
  offline_since: number | null;
  /** When the agent's being offline was last announced (agent.offline webhooks). */
  offline_notified_at: number | null;
  /** Set while an enrolled agent awaits an admin's approval: it is told no deployment (migration 15). */
  pending_since: number | null;
  /** The id of the enrolment token the agent enrolled with; null for one an admin created (migration 15). */
  enrolled_with: number | null;
  /** Hex SHA-256 of the key an enrolled machine keeps, to enrol again after a lost answer (migration 18). */
  enrol_key_hash: string | null;
}

/** Rows of `enrol_tokens`: secrets that register new agents, each a bounded number of times (migration 15). */
export interface EnrolTokensTable {
  id: Generated<number>;
  workspace_id: number;
  /** Hex SHA-256 of the whole token string. */
  hash: string;
  max_uses: number;
  uses: Generated<number>;
  /** JSON array of the tags every enrolled agent gets. */
  tags: string;
  /** A regular expression every enrolled agent's name must match in full, or null. */
  name_pattern: string | null;
  /** 1: an enrolled agent waits for `cairn agent approve` before it receives deployments. */
  require_approval: number;
  created_at: number;
  /** The name of the token that created it. */
  created_by: string;
  expires_at: number | null;
  revoked_at: number | null;
}

/** Rows of `plan_requests`: a plan's question to a machine another replica holds (migration 19). */
export interface PlanRequestsTable {
  /** 16 hex digits, random. */
  id: string;
  agent_id: number;
  /** JSON: the PlanQuestion. */
  question: string;
  /** JSON: the MachinePlanOutcome, once answered. */
  answer: string | null;
  created_at: number;
}

/** Rows of `replica_leases`: each live replica's lease, renewed every few seconds (migration 12). */
export interface ReplicaLeasesTable {
  replica_id: string;
  started_at: number;
  expires_at: number;
}

/** Rows of `agent_tags`: labels of agents, such as `canary`, that rollout policies select by. */
export interface AgentTagsTable {
  agent_id: number;
  tag: string;
}

/** Rows of `rollouts`: one `deploy activate`, staged when it has a policy. */
export interface RolloutsTable {
  id: Generated<number>;
  workspace_id: number;
  created_at: number;
  created_by: string;
  /** The normalised rollout policy (JSON), or null for a rollout that deploys at once. */
  policy: string | null;
  /** A staged rollout's state (`src/protocol/rollout-policy.ts`); null without a policy. */
  state: string | null;
  reason: string | null;
  /** Why a staged rollout waits, for people. */
  waiting: string | null;
  /** The batch open now; -1 before the first opens. */
  batch: Generated<number>;
  batch_count: Generated<number>;
  /** The last batch `promote` asked to open now; -1 when none. */
  promoted_to: Generated<number>;
  batch_opened_at: number | null;
  paused_at: number | null;
  resumed_at: number | null;
  finished_at: number | null;
  /** Failed and decided agents the threshold no longer counts (set on resume). */
  accepted_failed: Generated<number>;
  accepted_decided: Generated<number>;
  /** Compare-and-set counter: a decision applies only to the version it was made from. */
  version: Generated<number>;
  /** `pending` while switched agents remain to be reverted, then `done`; null otherwise. */
  revert_state: string | null;
  /** Set on a rollout made to revert another. */
  reverts_rollout_id: number | null;
}

/** Rows of `deployments`: one agent asked to switch to one store path. */
export interface DeploymentsTable {
  id: Generated<number>;
  rollout_id: number;
  workspace_id: number;
  agent_id: number;
  store_path: string;
  /** JSON object of rollback scripts by Nix system (deploy.json's `rollbackScript`), or null. */
  rollback_script: string | null;
  exit4: string;
  /** JSON array of the agent's health checks, or null. */
  health_checks: string | null;
  /** Seconds the agent has to get the deployment confirmed over a new connection. */
  confirm_timeout: Generated<number>;
  /** `deploy`, or `rollback` for one made by `cairn deploy rollback`. */
  kind: Generated<string>;
  reboot_required: Generated<number>;
  state: string;
  step: string | null;
  reason: string | null;
  created_at: number;
  started_at: number | null;
  finished_at: number | null;
  /**
   * Total NAR size of the store path's closure once its agent reported it: as the caches
   * verified it when they hold all of it, else as that agent reported it.
   */
  closure_nar_size: number | null;
  /** The closure its agent reported for this deployment (shared by reports of the same content). */
  closure_id: Generated<number | null>;
  /** When log retention deleted the deployment's log lines. */
  logs_expired_at: number | null;
  /** Batch of a staged rollout (0 is the canaries' when there are canaries); null otherwise. */
  batch: number | null;
  /** When the agent was let to see it; null while its batch has not opened. */
  dispatched_at: number | null;
  /** When it was held back because its agent was offline as its batch opened. */
  deferred_at: number | null;
  /** The staged rollout's verdict: succeeded, failed, timed-out or cancelled. */
  outcome: string | null;
  /** 0 for an agent that returned after being deferred: outside the quota and the threshold. */
  counted: Generated<number>;
  /** What the agent ran when the rollout was made (the target of `revert`). */
  previous_path: string | null;
  reverted: Generated<number>;
}

/** Rows of `deployment_logs`: one line each, numbered per deployment. */
export interface DeploymentLogsTable {
  deployment_id: number;
  seq: number;
  t: number;
  text: string;
}

/** Rows of `deployment_log_sources`: per deployment, the last line number stored from each source. */
export interface DeploymentLogSourcesTable {
  deployment_id: number;
  src: string;
  last_n: number;
}

/** Rows of `closure_paths`: every store path of a reported closure, once per distinct content. */
export interface ClosurePathsTable {
  id: Generated<number>;
  path: string;
  nar_size: number;
  /** Space-separated base names, as in a narinfo. */
  refs: string;
  /** Of path, NAR size and references (`pathDigest`): unique. */
  digest: string;
}

/**
 * Rows of `closures`: one reported closure of a root store path, once per workspace and distinct
 * content; deployments point at the one their agent reported.
 */
export interface ClosuresTable {
  id: Generated<number>;
  workspace_id: number;
  root: string;
  /** Of the paths' digests (`closureDigest`) once complete; null while being recorded. */
  digest: string | null;
  /** 1 once every part of the closure arrived. */
  complete: Generated<number>;
  path_count: number | null;
  nar_size: number | null;
  created_at: number;
}

/** Rows of `closure_members`: which paths make up which closure. */
export interface ClosureMembersTable {
  closure_id: number;
  path_id: number;
}

/** Rows of `dashboard_sessions`: browser sessions, each signed in with a token. */
export interface DashboardSessionsTable {
  /** Hex SHA-256 of the cookie's secret. */
  id: string;
  token_id: string;
  /** The session's CSRF token, put in every form. */
  csrf: string;
  created_at: number;
  expires_at: number;
}

/** Rows of `audit_log`: who did what, from where, when. */
export interface AuditLogTable {
  id: Generated<number>;
  workspace_id: number;
  at: number;
  token_id: string | null;
  token_name: string | null;
  action: string;
  target: string;
  address: string | null;
  /** JSON object with details, or null. */
  detail: string | null;
}

/** The whole database, as Kysely sees it. */
/** The one row of `server_identity`: the server's random id, told to agents in `welcome`. */
export interface ServerIdentityTable {
  id: number;
  server_id: string;
  created_at: number;
}

/** An endpoint webhooks are sent to (migration 013). */
export interface WebhookEndpointsTable {
  id: Generated<number>;
  workspace_id: number;
  url: string;
  /** JSON array of event types. */
  events: string;
  /** `whsec_<base64>`. */
  secret: string;
  /** After a rotation, the old secret, also signed with until `previous_secret_until`. */
  previous_secret: string | null;
  previous_secret_until: number | null;
  created_at: number;
  created_by: string;
  disabled_at: number | null;
  disabled_reason: string | null;
  last_success_at: number | null;
  deleted_at: number | null;
}

/** One event to send to one endpoint: the outbox (migration 013). */
export interface WebhookDeliveriesTable {
  id: Generated<number>;
  endpoint_id: number;
  workspace_id: number;
  message_id: string;
  event: string;
  /** JSON of the event's data. */
  data: string;
  created_at: number;
  /** pending, succeeded or failed. */
  state: string;
  attempts: Generated<number>;
  next_attempt_at: number | null;
  claimed_until: number | null;
  last_attempt_at: number | null;
  last_status: number | null;
  last_error: string | null;
  finished_at: number | null;
}

export interface Database {
  workspaces: WorkspacesTable;
  tokens: TokensTable;
  caches: CachesTable;
  cache_keys: CacheKeysTable;
  nar_files: NarFilesTable;
  store_paths: StorePathsTable;
  cache_files: CacheFilesTable;
  cache_pins: CachePinsTable;
  cache_gc_runs: CacheGcRunsTable;
  agents: AgentsTable;
  agent_tags: AgentTagsTable;
  rollouts: RolloutsTable;
  deployments: DeploymentsTable;
  deployment_logs: DeploymentLogsTable;
  deployment_log_sources: DeploymentLogSourcesTable;
  closure_paths: ClosurePathsTable;
  closures: ClosuresTable;
  closure_members: ClosureMembersTable;
  dashboard_sessions: DashboardSessionsTable;
  audit_log: AuditLogTable;
  server_identity: ServerIdentityTable;
  webhook_endpoints: WebhookEndpointsTable;
  webhook_deliveries: WebhookDeliveriesTable;
  replica_leases: ReplicaLeasesTable;
  enrol_tokens: EnrolTokensTable;
  plan_requests: PlanRequestsTable;
}
