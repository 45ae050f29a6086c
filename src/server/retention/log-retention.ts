import type { Kysely } from 'kysely';
import type { Database } from '../db/database-schema.ts';

/** Deployments whose logs are deleted per statement: keeps each transaction short. */
const BATCH = 200;
const DAY_MS = 24 * 60 * 60 * 1000;

/**
 * Deletes the log lines of deployments that finished more than `days` ago, and marks them so
 * that pages can say the log expired. A running deployment's log is never cut, however long
 * it runs. Safe to run on several replicas at once: the deletes are idempotent.
 * Returns how many deployments lost their logs.
 */
export async function deleteExpiredLogs(
  db: Kysely<Database>,
  options: { days: number; now: number },
): Promise<number> {
  const cutoff = options.now - options.days * DAY_MS;
  let total = 0;
  for (;;) {
    const ids = (
      await db
        .selectFrom('deployments')
        .select('id')
        .where('finished_at', '<', cutoff)
        .where('logs_expired_at', 'is', null)
        .orderBy('id')
        .limit(BATCH)
        .execute()
    ).map((r) => r.id);
    if (ids.length === 0) return total;
    await db.transaction().execute(async (trx) => {
      await trx.deleteFrom('deployment_logs').where('deployment_id', 'in', ids).execute();
      await trx.deleteFrom('deployment_log_sources').where('deployment_id', 'in', ids).execute();
      await trx
        .updateTable('deployments')
        .set({ logs_expired_at: options.now })
        .where('id', 'in', ids)
        .execute();
    });
    total += ids.length;
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
    running = deleteExpiredLogs(db, { days: options.days, now: options.now() })
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
