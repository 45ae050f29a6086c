import type { Kysely } from 'kysely';
import type { Database, DeploymentLogSourcesTable, DeploymentLogsTable } from './database-schema.ts';
import { inChunks } from './in-chunks.ts';

/** Where a deployment's log stands in the database: its last line, and the last `n` of each source. */
export interface LogHighWater {
  readonly seq: number;
  /** Characters of text stored, for the per-deployment cap. */
  readonly chars: number;
  readonly sources: Map<string, number>;
}

/** Stores deployments' log lines together with the marks that drop lines sent twice. */
export class LogLineRepository {
  constructor(private readonly db: Kysely<Database>) {}

  /** Each deployment's high-water mark (two queries for up to 1,000 deployments); absent ones start at 0. */
  async highWater(deploymentIds: readonly number[]): Promise<Map<number, LogHighWater>> {
    const out = new Map<number, LogHighWater>(
      deploymentIds.map((id) => [id, { seq: 0, chars: 0, sources: new Map<string, number>() }]),
    );
    if (deploymentIds.length === 0) return out;
    const [seqs, sources] = await Promise.all([
      this.db
        .selectFrom('deployment_logs')
        .select((eb) => [
          'deployment_id',
          eb.fn.max('seq').as('seq'),
          eb.fn.sum<number>(eb.fn('length', ['text'])).as('chars'),
        ])
        .where('deployment_id', 'in', [...deploymentIds])
        .groupBy('deployment_id')
        .execute(),
      this.db
        .selectFrom('deployment_log_sources')
        .selectAll()
        .where('deployment_id', 'in', [...deploymentIds])
        .execute(),
    ]);
    for (const r of seqs) {
      out.set(r.deployment_id, { seq: Number(r.seq), chars: Number(r.chars ?? 0), sources: new Map() });
    }
    for (const r of sources) out.get(r.deployment_id)?.sources.set(r.src, r.last_n);
    return out;
  }

  /**
   * Inserts lines and raises the sources' marks in one transaction. Lines are numbered by the
   * caller from a high-water mark it read earlier; if another server wrote lines of the same
   * deployment since, a line number is taken twice, the primary key refuses it and nothing of
   * the batch is stored, so the caller can read the marks again and retry.
   */
  async append(
    rows: readonly DeploymentLogsTable[],
    marks: readonly DeploymentLogSourcesTable[],
  ): Promise<void> {
    await this.db.transaction().execute(async (trx) => {
      for (const part of inChunks(rows, 1000)) {
        await trx.insertInto('deployment_logs').values(part).execute();
      }
      for (const part of inChunks(marks, 1000)) {
        await trx
          .insertInto('deployment_log_sources')
          .values(part)
          .onConflict((oc) =>
            oc.columns(['deployment_id', 'src']).doUpdateSet((eb) => ({ last_n: eb.ref('excluded.last_n') })),
          )
          .execute();
      }
    });
  }
}
