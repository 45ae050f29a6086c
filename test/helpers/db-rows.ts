import type { Kysely } from 'kysely';
import type { Database } from '../../src/server/db/database-schema.ts';

/**
 * Rows for tests of the data layer that write straight to a migrated database: each fills in
 * what the test does not care about, so a test names only the columns it is about.
 */
export async function insertWorkspace(db: Kysely<Database>, name = 'w'): Promise<number> {
  return (
    await db
      .insertInto('workspaces')
      .values({ name, created_at: 1 })
      .returning('id')
      .executeTakeFirstOrThrow()
  ).id;
}

export async function insertAgent(db: Kysely<Database>, workspaceId: number, name: string): Promise<number> {
  return (
    await db
      .insertInto('agents')
      .values({ workspace_id: workspaceId, name, token_id: name, created_at: 1, online: 1 })
      .returning('id')
      .executeTakeFirstOrThrow()
  ).id;
}

export async function insertRollout(db: Kysely<Database>, workspaceId: number): Promise<number> {
  return (
    await db
      .insertInto('rollouts')
      .values({
        workspace_id: workspaceId,
        created_at: 1,
        created_by: 't',
        policy: null,
        state: null,
        reason: null,
        waiting: null,
      })
      .returning('id')
      .executeTakeFirstOrThrow()
  ).id;
}

/** A dispatched deployment of `storePath` to the agent, pending unless said otherwise. */
export async function insertDeployment(
  db: Kysely<Database>,
  d: { rolloutId: number; workspaceId: number; agentId: number; storePath: string; state?: string },
): Promise<number> {
  const state = d.state ?? 'pending';
  return (
    await db
      .insertInto('deployments')
      .values({
        rollout_id: d.rolloutId,
        workspace_id: d.workspaceId,
        agent_id: d.agentId,
        store_path: d.storePath,
        rollback_script: null,
        exit4: 'fail',
        health_checks: null,
        state,
        step: null,
        reason: null,
        created_at: 1,
        started_at: state === 'running' ? 5 : null,
        finished_at: null,
        closure_nar_size: null,
        logs_expired_at: null,
        batch: null,
        dispatched_at: 1,
        deferred_at: null,
        outcome: null,
        previous_path: null,
      })
      .returning('id')
      .executeTakeFirstOrThrow()
  ).id;
}
