/** Options of a {@link TokenBucket}; many buckets may share one options object. */
export interface TokenBucketOptions {
  /** Tokens the bucket holds at most, and starts with: the burst it allows. */
  readonly burst: number;
  /** Tokens that come back per second. */
  readonly perSecond: number;
  /** The clock in milliseconds; injectable so that tests need not sleep. */
  readonly now?: () => number;
}

/**
 * A token bucket: starts full with `burst` tokens and refills at `perSecond`, never past `burst`.
 * It holds two numbers and does no I/O, so a server can keep one per connection or per address.
 */
export class TokenBucket {
  readonly #options: TokenBucketOptions;
  #tokens: number;
  #at: number;

  constructor(options: TokenBucketOptions) {
    this.#options = options;
    this.#tokens = options.burst;
    this.#at = (options.now ?? Date.now)();
  }

  /** Adds the tokens earned since the last call; returns how many there are now. */
  #refill(): number {
    const { burst, perSecond, now = Date.now } = this.#options;
    const at = now();
    this.#tokens = Math.min(burst, this.#tokens + ((at - this.#at) / 1000) * perSecond);
    this.#at = at;
    return this.#tokens;
  }

  /** Takes one token if there is one; false, taking nothing, when the bucket is empty. */
  tryTake(): boolean {
    if (this.#refill() < 1) return false;
    this.#tokens -= 1;
    return true;
  }

  /** Takes one token whether or not there is one; the bucket stops at empty. */
  spend(): void {
    this.#tokens = Math.max(0, this.#refill() - 1);
  }

  /** Whole seconds until a token is there (rounded up); 0 when there is one now. */
  secondsUntilToken(): number {
    const tokens = this.#refill();
    return tokens >= 1 ? 0 : Math.ceil((1 - tokens) / this.#options.perSecond);
  }
}
