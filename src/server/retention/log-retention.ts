import type { Kysely } from 'kysely';
import type { Database } from '../db/database-schema.ts';
import type { SqlDialect } from '../db/migrations.ts';

/** Deployments whose logs are deleted per statement: keeps each transaction short. */
const BATCH = 200;
const DAY_MS = 24 * 60 * 60 * 1000;

/**
 * Deletes the log lines of deployments that finished more than `days` ago, and marks them so
 * that pages can say the log expired. A running deployment's log is never cut, however long
 * it runs. Each batch is chosen inside its own transaction; on PostgreSQL its deployments are
 * taken `FOR UPDATE SKIP LOCKED`, so replicas running it at once each claim other batches and
 * never delete (nor count) the same deployment's logs twice. SQLite has one writer.
 * Returns how many deployments lost their logs here.
 */
export async function deleteExpiredLogs(
  db: Kysely<Database>,
  options: { days: number; now: number; dialect?: SqlDialect },
): Promise<number> {
  const cutoff = options.now - options.days * DAY_MS;
  let total = 0;
  for (;;) {
    const claimed = await db.transaction().execute(async (trx) => {
      let q = trx
        .selectFrom('deployments')
        .select('id')
        .where('finished_at', '<', cutoff)
        .where('logs_expired_at', 'is', null)
        .orderBy('id')
        .limit(BATCH);
      if (options.dialect === 'postgres') q = q.forUpdate().skipLocked();
      const ids = (await q.execute()).map((r) => r.id);
      if (ids.length === 0) return 0;
      await trx.deleteFrom('deployment_logs').where('deployment_id', 'in', ids).execute();
      await trx.deleteFrom('deployment_log_sources').where('deployment_id', 'in', ids).execute();
      await trx
        .updateTable('deployments')
        .set({ logs_expired_at: options.now })
        .where('id', 'in', ids)
        .execute();
      return ids.length;
    });
    // None left, or every one left is being deleted by another replica right now.
    if (claimed === 0) return total;
    total += claimed;
  }
}

/**
 * Runs {@link deleteExpiredLogs} a minute after start and then every hour, until stopped.
 * Failures are logged and retried at the next round.
 */
export function startLogRetention(
  db: Kysely<Database>,
  options: {
    days: number;
    now: () => number;
    dialect?: SqlDialect;
    onError: (err: unknown) => void;
    onDeleted?: (count: number) => void;
    firstMs?: number;
    everyMs?: number;
  },
): { stop(): Promise<void> } {
  let running: Promise<void> = Promise.resolve();
  let timer: NodeJS.Timeout | undefined;
  let stopped = false;
  const round = () => {
    running = deleteExpiredLogs(db, {
      days: options.days,
      now: options.now(),
      ...(options.dialect ? { dialect: options.dialect } : {}),
    })
      .then((n) => {
        if (n > 0) options.onDeleted?.(n);
      })
      .catch(options.onError)
      .finally(() => {
        if (!stopped) schedule(options.everyMs ?? 60 * 60 * 1000);
      });
  };
  const schedule = (ms: number) => {
    timer = setTimeout(round, ms);
    timer.unref();
  };
  schedule(options.firstMs ?? 60_000);
  return {
    stop: async () => {
      stopped = true;
      if (timer) clearTimeout(timer);
      await running;
    },
  };
}
