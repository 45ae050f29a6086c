import { TokenBucket } from '../../lib/token-bucket.ts';

/** Options of a {@link FailedAuthLimiter}. */
export interface FailedAuthLimiterOptions {
  /** Failures an address may make in a burst before it is refused. */
  readonly burst: number;
  /** Failures forgiven per second. */
  readonly perSecond: number;
  /** Addresses tracked at most; the oldest are forgotten first. */
  readonly maxAddresses: number;
  readonly now: () => number;
}

/**
 * Limits failed authentications per client address with a token bucket: an address that keeps
 * presenting bad tokens is refused (429) until it slows down, while every other address goes on
 * as before. Only failures count, so a busy client with a good token is never slowed.
 */
export class FailedAuthLimiter {
  readonly #o: FailedAuthLimiterOptions;
  readonly #buckets = new Map<string, TokenBucket>();

  constructor(options: Partial<FailedAuthLimiterOptions> = {}) {
    this.#o = { burst: 20, perSecond: 1, maxAddresses: 10_000, now: Date.now, ...options };
  }

  /** Seconds until the address may try again, or 0 when it may now. */
  retryAfter(address: string): number {
    return this.#buckets.get(address)?.secondsUntilToken() ?? 0;
  }

  /** Counts one failed authentication from the address. */
  fail(address: string): void {
    const b = this.#buckets.get(address) ?? new TokenBucket(this.#o);
    b.spend();
    // Moved to the end of the map's order: the first entry is then the one longest quiet.
    this.#buckets.delete(address);
    this.#buckets.set(address, b);
    if (this.#buckets.size > this.#o.maxAddresses) {
      const oldest = this.#buckets.keys().next().value;
      if (oldest !== undefined) this.#buckets.delete(oldest);
    }
  }
}
