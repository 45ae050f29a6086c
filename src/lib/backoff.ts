/** Options of a {@link Backoff}. */
export interface BackoffOptions {
  /** First delay, in ms. */
  readonly initialMs: number;
  /** Largest delay, in ms. */
  readonly maxMs: number;
  /** Growth per failure. */
  readonly factor?: number;
  /** Source of randomness in [0, 1), injectable for tests. */
  readonly random?: () => number;
}

/**
 * Exponential backoff with full jitter: each delay is random in [0, min(max, initial * factor^n)].
 * Jitter matters more than the curve: after a server restart, thousands of agents must not
 * reconnect in lockstep. `reset()` after a success starts over from the initial delay.
 */
export class Backoff {
  readonly #options: BackoffOptions;
  #failures = 0;

  constructor(options: BackoffOptions) {
    this.#options = options;
  }

  /** The delay before the next attempt; counts one more failure. */
  next(): number {
    const delay = backoffDelay(this.#failures, this.#options);
    this.#failures = Math.min(this.#failures + 1, 64);
    return delay;
  }

  /** Starts over after a success. */
  reset(): void {
    this.#failures = 0;
  }
}

/** The delay {@link Backoff} waits after `failures` failed attempts: pure, for callers that keep the count. */
export function backoffDelay(failures: number, options: BackoffOptions): number {
  const { initialMs, maxMs, factor = 2, random = Math.random } = options;
  const ceiling = Math.min(maxMs, initialMs * factor ** failures);
  return Math.round(ceiling * random());
}

/** Resolves after `ms`, or at once when the signal aborts. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolve();
    }
    signal?.addEventListener('abort', done, { once: true });
  });
}
