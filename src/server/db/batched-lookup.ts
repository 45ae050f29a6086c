/** A caller's lookup waiting for the batch. */
interface Waiter<V> {
  readonly resolve: (value: V | undefined) => void;
  readonly reject: (err: unknown) => void;
}

/**
 * Looks keys up in batches: every caller asking in the same turn of the event loop is answered
 * by one call of `many`, so ten thousand agents reconnecting at once cost a few queries instead
 * of ten thousand (each a round trip waiting behind the others on PostgreSQL).
 */
export class BatchedLookup<K, V> {
  readonly #many: (keys: readonly K[]) => Promise<Map<K, V>>;
  /** Keys to look up in the next batch, with who waits for each. */
  #wanted = new Map<K, Waiter<V>[]>();
  #timer: NodeJS.Immediate | undefined;

  /** @param many looks up these keys (distinct); keys it does not find are absent from its map. */
  constructor(many: (keys: readonly K[]) => Promise<Map<K, V>>) {
    this.#many = many;
  }

  /** The value of `key`, or undefined when there is none. */
  get(key: K): Promise<V | undefined> {
    return new Promise((resolve, reject) => {
      const waiter = { resolve, reject };
      const waiting = this.#wanted.get(key);
      if (waiting) waiting.push(waiter);
      else this.#wanted.set(key, [waiter]);
      this.#timer ??= setImmediate(() => this.#run());
    });
  }

  #run(): void {
    this.#timer = undefined;
    const wanted = this.#wanted;
    this.#wanted = new Map();
    let pending: Promise<Map<K, V>>;
    try {
      pending = this.#many([...wanted.keys()]);
    } catch (err) {
      pending = Promise.reject(err);
    }
    pending.then(
      (found) => {
        for (const [key, waiters] of wanted) for (const w of waiters) w.resolve(found.get(key));
      },
      // Every waiter, each with its own reject: one left pending would stall its caller for good.
      (err) => {
        for (const waiters of wanted.values()) for (const w of waiters) w.reject(err);
      },
    );
  }
}
