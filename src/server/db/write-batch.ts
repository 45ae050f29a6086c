import type { Kysely } from 'kysely';
import type { Database } from './database-schema.ts';

/** How long writes wait to be committed together. */
const FLUSH_MS = 20;
/** Writes queued before a flush starts at once. */
const FLUSH_AT = 1000;

/** Writes of one kind that can be made in one statement when they are queued one after another. */
export interface WriteGroup<I, R> {
  /**
   * Makes the writes of `items`, in one go, as if one after another in their order (an item may
   * name the same row as an earlier one); resolves with each item's result, in order.
   */
  runMany(db: Kysely<Database>, items: readonly I[]): Promise<R[]>;
  /**
   * The rows an item writes, as keys such as `agent:7`. With it, an item joins an earlier write of
   * its group queued before other writes, as long as none of those touches the same rows (nor is
   * a write of unknown rows): ten thousand agents each writing a step, a hello and a result,
   * interleaved, then cost three statements, not thirty thousand. Without it, only writes of the
   * group queued one right after another are made together.
   */
  keysOf?(item: I): readonly string[];
}

/** Resolves once everything queued before it is committed; writes nothing and orders nothing. */
const COMMITTED: WriteGroup<undefined, undefined> = {
  runMany: async (_db, items) => items.map(() => undefined),
  keysOf: () => [],
};

/** Writes of one group run together at most (bound parameters stay far under every limit). */
const GROUP_MAX = 500;

interface Queued {
  readonly run: (db: Kysely<Database>) => Promise<unknown>;
  readonly resolve: (value: unknown) => void;
  readonly reject: (err: unknown) => void;
  readonly group?: WriteGroup<unknown, unknown>;
  readonly item?: unknown;
}

/**
 * Groups the many small writes agents cause (a step, a result, what an agent observed, online
 * and offline) into one transaction per 20 ms. Ten thousand agents reporting at once then cost a
 * few hundred commits, not tens of thousands: one commit per write is what an SQLite or PostgreSQL
 * server spends most of its time on. Writes run in the order they were queued; each caller gets
 * its own write's result once the transaction has committed.
 */
export class WriteBatch {
  readonly #db: Kysely<Database>;
  readonly #before: () => Promise<void>;
  #queue: Queued[] = [];
  #timer: NodeJS.Timeout | undefined;
  #flushing: Promise<void> = Promise.resolve();

  /**
   * @param before runs before each batch is written: the hub flushes log lines first, so that a
   *   result is never recorded before the lines that came ahead of it.
   */
  constructor(db: Kysely<Database>, before: () => Promise<void> = async () => {}) {
    this.#db = db;
    this.#before = before;
  }

  /** Queues a write; resolves with its result once committed. */
  write<T>(run: (db: Kysely<Database>) => Promise<T>): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      this.#queue.push({ run, resolve: resolve as (v: unknown) => void, reject });
      if (this.#queue.length >= FLUSH_AT) void this.flush();
      else this.#timer ??= setTimeout(() => void this.flush(), FLUSH_MS);
    });
  }

  /**
   * Queues a write of `group`; writes of the same group queued one after another are made in
   * one statement ({@link WriteGroup.runMany}), which on PostgreSQL saves a round trip each.
   */
  writeGrouped<I, R>(group: WriteGroup<I, R>, item: I): Promise<R> {
    return new Promise<R>((resolve, reject) => {
      this.#queue.push({
        run: async (db) => (await group.runMany(db, [item]))[0],
        resolve: resolve as (v: unknown) => void,
        reject,
        group: group as WriteGroup<unknown, unknown>,
        item,
      });
      if (this.#queue.length >= FLUSH_AT) void this.flush();
      else this.#timer ??= setTimeout(() => void this.flush(), FLUSH_MS);
    });
  }

  /** Resolves once every write queued so far is committed (without flushing early). */
  committed(): Promise<void> {
    return this.writeGrouped(COMMITTED, undefined);
  }

  /** Writes everything queued so far; resolves once it is committed. */
  async flush(): Promise<void> {
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = undefined;
    const batch = this.#queue;
    this.#queue = [];
    this.#flushing = this.#flushing.then(() => this.#write(batch));
    await this.#flushing;
  }

  async #write(batch: readonly Queued[]): Promise<void> {
    if (batch.length === 0) return;
    try {
      await this.#before();
    } catch {
      // The log writer reports its own failures; the writes go ahead.
    }
    let results: unknown[];
    try {
      const runs = planRuns(batch);
      results = await this.#db.transaction().execute(async (trx) => {
        const out: unknown[] = new Array(batch.length);
        for (const run of runs) {
          const group = run.group;
          if (!group) {
            out[run.at[0]!] = await batch[run.at[0]!]!.run(trx);
            continue;
          }
          const got = await group.runMany(
            trx,
            run.at.map((i) => batch[i]!.item),
          );
          for (const [k, i] of run.at.entries()) out[i] = got[k];
        }
        return out;
      });
    } catch {
      // One write failed and took the transaction with it: run each on its own, so that one bad
      // write fails alone and the others still happen.
      for (const q of batch) {
        try {
          q.resolve(await q.run(this.#db));
        } catch (err) {
          q.reject(err);
        }
      }
      return;
    }
    for (const [i, q] of batch.entries()) q.resolve(results[i]);
  }
}

/** Writes made in one statement: of one group (or one write of no group), by index in the batch. */
interface Run {
  readonly group: WriteGroup<unknown, unknown> | undefined;
  readonly at: number[];
  /** The rows its writes touch; undefined when unknown (a write of no group, or a group without keys). */
  readonly keys: Set<string> | undefined;
}

/**
 * Orders a batch into runs, each made in one statement: a write of a group joins the latest
 * run of its group unless a run after that one touches the same rows or unknown rows, so that
 * writes to any one row still happen in the order they were queued.
 */
function planRuns(batch: readonly Queued[]): Run[] {
  const runs: Run[] = [];
  for (const [i, q] of batch.entries()) {
    const group = q.group;
    const keys = group?.keysOf?.(q.item);
    let target: Run | undefined;
    if (group) {
      for (let j = runs.length - 1; j >= 0; j--) {
        const r = runs[j]!;
        if (r.group === group) {
          if (r.at.length < GROUP_MAX) target = r;
          break;
        }
        // Past a write of unknown rows, or of one of this write's rows, it cannot move.
        if (!keys || !r.keys || keys.some((k) => r.keys!.has(k))) break;
      }
    }
    if (target) {
      target.at.push(i);
      if (keys && target.keys) for (const k of keys) target.keys.add(k);
    } else {
      runs.push({ group, at: [i], keys: keys ? new Set(keys) : undefined });
    }
  }
  return runs;
}
