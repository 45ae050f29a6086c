import type { Principal } from './principal.ts';

/** Options of a {@link PrincipalCache}. */
export interface PrincipalCacheOptions {
  /** Tokens remembered at most; the one remembered longest ago is forgotten first. */
  readonly maxEntries: number;
  /** How long a looked-up token is trusted without asking the database again. */
  readonly ttlMs: number;
}

interface Entry {
  readonly principal: Principal;
  /** When the entry stops being trusted: the TTL or the token's expiry, whichever comes first. */
  readonly staleAt: number;
}

/**
 * Remembers, by token hash (never the secret), who a valid token is, so a request with a known
 * token needs no query. Only live tokens are remembered: an unknown, revoked or expired token is
 * looked up (and counted as a failure) every time. A revocation in this process takes effect at
 * once through {@link forget}; the TTL bounds how long a revocation this process never heard of
 * (another replica's, if its event is lost) can go unnoticed.
 */
export class PrincipalCache {
  readonly #o: PrincipalCacheOptions;
  /** By token hash, oldest first. */
  readonly #entries = new Map<string, Entry>();
  readonly #hashByTokenId = new Map<string, string>();
  /** Counts revocations: a lookup that began before one must not be remembered. */
  #revocations = 0;

  constructor(options: Partial<PrincipalCacheOptions> = {}) {
    this.#o = { maxEntries: 10_000, ttlMs: 5_000, ...options };
  }

  /** The principal of the token with this hash, if remembered, still fresh and not expired at `now`. */
  get(hash: string, now: number): Principal | undefined {
    const entry = this.#entries.get(hash);
    if (entry === undefined) return undefined;
    if (now >= entry.staleAt) {
      this.#delete(hash, entry.principal.tokenId);
      return undefined;
    }
    return entry.principal;
  }

  /** A mark to take before looking a token up, and to pass to {@link set} with what was found. */
  mark(): number {
    return this.#revocations;
  }

  /**
   * Remembers a live token found in the database. Nothing is remembered when a token was
   * revoked since `mark` was taken: the row read may predate that revocation.
   */
  set(
    hash: string,
    token: { principal: Principal; expiresAt: number | null },
    now: number,
    mark: number,
  ): void {
    if (mark !== this.#revocations) return;
    const ttlEnd = now + this.#o.ttlMs;
    const staleAt = token.expiresAt === null ? ttlEnd : Math.min(ttlEnd, token.expiresAt);
    this.#delete(hash, token.principal.tokenId);
    this.#entries.set(hash, { principal: token.principal, staleAt });
    this.#hashByTokenId.set(token.principal.tokenId, hash);
    // Insertion order approximates recency: a used token is looked up again every TTL.
    if (this.#entries.size > this.#o.maxEntries) {
      const [oldest, entry] = this.#entries.entries().next().value as [string, Entry];
      this.#delete(oldest, entry.principal.tokenId);
    }
  }

  /** Forgets a token, at once: it was revoked. */
  forget(tokenId: string): void {
    this.#revocations++;
    const hash = this.#hashByTokenId.get(tokenId);
    if (hash !== undefined) this.#delete(hash, tokenId);
  }

  #delete(hash: string, tokenId: string): void {
    this.#entries.delete(hash);
    if (this.#hashByTokenId.get(tokenId) === hash) this.#hashByTokenId.delete(tokenId);
  }
}
