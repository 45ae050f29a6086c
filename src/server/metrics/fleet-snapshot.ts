import type { Kysely } from 'kysely';
import type { Database } from '../db/database-schema.ts';

/** The fleet as the database has it at one moment: what the gauges of `/metrics` show. */
export interface FleetSnapshot {
  /** Agents online and offline. */
  readonly agents: { readonly online: number; readonly offline: number };
  /** Staged rollouts by state (a rollout that deploys at once has none). */
  readonly rollouts: ReadonlyArray<{ readonly state: string; readonly count: number }>;
}

/** One agent, for the per-agent series. */
export interface AgentSnapshot {
  readonly name: string;
  readonly kind: string | null;
  readonly system: string | null;
  readonly version: string | null;
  readonly online: boolean;
  readonly lastSeenAt: number | null;
  /** State of its newest deployment; null when it has none. */
  readonly deploymentState: string | null;
  /** Whether its newest finished deployment said the machine must reboot for the new kernel. */
  readonly rebootRequired: boolean;
}

/**
 * Reads the fleet's gauges: one grouped query per table (agents, and staged rollouts through
 * their state index), never a row per agent, and never the deployments table, which grows with
 * history: a scrape costs about the same with 10 agents or 10,000 (bench:fleet `--metrics`).
 */
export async function readFleetSnapshot(db: Kysely<Database>): Promise<FleetSnapshot> {
  const [agents, rollouts] = await Promise.all([
    db
      .selectFrom('agents')
      .select(['online', (eb) => eb.fn.countAll<number | string>().as('n')])
      .groupBy('online')
      .execute(),
    db
      .selectFrom('rollouts')
      .select(['state', (eb) => eb.fn.countAll<number | string>().as('n')])
      .where('state', 'is not', null)
      .groupBy('state')
      .execute(),
  ]);
  let online = 0;
  let offline = 0;
  for (const r of agents) {
    if (Number(r.online) === 1) online += Number(r.n);
    else offline += Number(r.n);
  }
  return {
    agents: { online, offline },
    rollouts: rollouts.map((r) => ({ state: r.state ?? '', count: Number(r.n) })),
  };
}

/**
 * Reads every agent with its newest deployment's state and whether its machine must reboot: one
 * query, with the newest deployments found through the (agent_id, state) index.
 */
export async function readAgentSnapshots(db: Kysely<Database>): Promise<AgentSnapshot[]> {
  const rows = await db
    .selectFrom('agents as a')
    .select([
      'a.name',
      'a.kind',
      'a.system',
      'a.agent_version',
      'a.online',
      'a.last_seen_at',
      (eb) =>
        eb
          .selectFrom('deployments as d')
          .select('d.state')
          .whereRef('d.agent_id', '=', 'a.id')
          .orderBy('d.id', 'desc')
          .limit(1)
          .as('deployment_state'),
      (eb) =>
        eb
          .selectFrom('deployments as f')
          .select('f.reboot_required')
          .whereRef('f.agent_id', '=', 'a.id')
          .where('f.state', 'in', ['succeeded', 'rolled-back'])
          .orderBy('f.id', 'desc')
          .limit(1)
          .as('reboot_required'),
    ])
    .orderBy('a.name')
    .execute();
  return rows.map((r) => ({
    name: r.name,
    kind: r.kind,
    system: r.system,
    version: r.agent_version,
    online: Number(r.online) === 1,
    lastSeenAt: r.last_seen_at === null ? null : Number(r.last_seen_at),
    deploymentState: r.deployment_state ?? null,
    rebootRequired: Number(r.reboot_required ?? 0) === 1,
  }));
}
