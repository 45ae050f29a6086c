import type { Kysely } from 'kysely';
import type { Database } from './database-schema.ts';

/** How long writes wait to be committed together. */
const FLUSH_MS = 20;
/** Writes queued before a flush starts at once. */
const FLUSH_AT = 1000;

/** Writes of one kind that can be made in one statement when they are queued one after another. */
export interface WriteGroup<I, R> {
  /** Makes the writes of `items`, in one go; resolves with each item's result, in order. */
  runMany(db: Kysely<Database>, items: readonly I[]): Promise<R[]>;
}

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
      results = await this.#db.transaction().execute(async (trx) => {
        const out: unknown[] = [];
        for (let i = 0; i < batch.length; ) {
          const q = batch[i]!;
          const group = q.group;
          if (!group) {
            out.push(await q.run(trx));
            i++;
            continue;
          }
          let end = i + 1;
          while (end < batch.length && batch[end]!.group === group && end - i < GROUP_MAX) end++;
          const results = await group.runMany(
            trx,
            batch.slice(i, end).map((x) => x.item),
          );
          out.push(...results);
          i = end;
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
