import { timingSafeEqual } from 'node:crypto';
import { CairnError } from '../../lib/cairn-error.ts';
import { parseTokenScope, type TokenScope } from '../../protocol/token-scope.ts';
import { BatchedLookup } from '../db/batched-lookup.ts';
import type { TokensTable } from '../db/database-schema.ts';
import type { TokenRepository } from '../db/token-repository.ts';
import { FailedAuthLimiter } from './failed-auth-limiter.ts';
import type { Principal } from './principal.ts';
import { PrincipalCache } from './principal-cache.ts';
import { hashTokenSecret, looksLikeEnrolToken, looksLikeToken } from './token-secret.ts';

/** How often a token's last-used time is written, at most. */
const TOUCH_INTERVAL_MS = 60_000;

/**
 * Turns an `Authorization` header into a {@link Principal}. Accepts `Bearer <token>` and
 * `Basic` with the token as password (any user name), which is what Nix sends from a netrc file.
 */
export class Authenticator {
  readonly #now: () => number;
  readonly #touched = new Map<string, number>();
  readonly #limiter: FailedAuthLimiter;
  readonly #known: PrincipalCache;
  /**
   * Lookups and last-use writes of the same turn, made together: in an agents' reconnect storm
   * thousands of tokens are checked at once, each otherwise a query of its own.
   */
  readonly #byHash: BatchedLookup<string, TokensTable>;
  readonly #touches: BatchedLookup<string, true>;

  constructor(
    tokens: TokenRepository,
    options: { now: () => number; limiter?: FailedAuthLimiter; cache?: PrincipalCache },
  ) {
    this.#now = options.now;
    this.#limiter = options.limiter ?? new FailedAuthLimiter({ now: options.now });
    // Remembering a valid token for seconds saves a query per request (a narinfo lookup is
    // otherwise dominated by it). Revocations here take effect at once (`forget`, on the bus's
    // `token-revoked`); one made on another replica whose event is lost still takes effect when
    // the TTL ends, so a revoked token pulls for at most that long there (docs/security.md).
    this.#known = options.cache ?? new PrincipalCache({ maxEntries: 10_000, ttlMs: 5_000 });
    this.#byHash = new BatchedLookup((hashes) => tokens.findByHashes(hashes));
    this.#touches = new BatchedLookup<string, true>(async (ids) => {
      await tokens.touchMany(ids, this.#now());
      return new Map<string, true>();
    });
  }

  /** Forgets what is remembered of a token, so its next use is looked up: it was revoked. */
  forget(tokenId: string): void {
    this.#known.forget(tokenId);
  }

  /**
   * The caller, when that can be told from memory alone: a valid token remembered from a recent
   * request, from an address not refused, whose last use needs no writing. Undefined means
   * "ask {@link authenticate}", never "no credentials": it is for a hot path without promises.
   */
  authenticateFromMemory(authorization: string, address = 'unknown'): Principal | undefined {
    if (this.#limiter.retryAfter(address) > 0) return undefined;
    const secret = secretFromHeader(authorization);
    if (secret === undefined || !looksLikeToken(secret)) return undefined;
    const now = this.#now();
    const principal = this.#known.get(hashTokenSecret(secret), now);
    if (principal === undefined || this.#touchDue(principal.tokenId, now)) return undefined;
    return principal;
  }

  /**
   * Resolves the caller: undefined without credentials. Failures count against the client's
   * address (for `purpose: 'sign-in'`, in a bucket of the address kept apart from API
   * requests'); an address with too many is refused before its token is even looked up.
   * @throws CairnError UNAUTHENTICATED for a malformed, unknown, revoked or expired token;
   *   TOO_MANY_REQUESTS (429, with Retry-After) for an address that failed too often.
   */
  async authenticate(
    authorization: string | undefined,
    address = 'unknown',
    options: { purpose?: 'api' | 'sign-in' } = {},
  ): Promise<Principal | undefined> {
    if (authorization === undefined || authorization === '') return undefined;
    // Sign-ins count in buckets of their own: a browser (or an attacker) failing to sign in
    // from an address never gets the tokens of CI or agents behind that address refused.
    const bucket = options.purpose === 'sign-in' ? `sign-in ${address}` : address;
    const wait = this.#limiter.retryAfter(bucket);
    if (wait > 0) {
      throw new CairnError(
        'TOO_MANY_REQUESTS',
        `Cannot authenticate: too many failed attempts from ${address}; retry in ${wait}s`,
        { headers: { 'Retry-After': String(wait) } },
      );
    }
    try {
      return await this.#check(authorization);
    } catch (err) {
      if (err instanceof CairnError && err.code === 'UNAUTHENTICATED') this.#limiter.fail(bucket);
      throw err;
    }
  }

  async #check(authorization: string): Promise<Principal> {
    const secret = secretFromHeader(authorization);
    // Kept apart from every other token: an enrolment token registers agents and nothing else.
    if (secret !== undefined && looksLikeEnrolToken(secret)) {
      throw new CairnError(
        'FORBIDDEN',
        'Cannot use an enrolment token here: it only enrols agents (cairn deploy agent --enrol); use the agent token the enrolment gave, or another token',
      );
    }
    if (secret === undefined || !looksLikeToken(secret)) {
      throw new CairnError(
        'UNAUTHENTICATED',
        'Cannot authenticate: expected "Bearer <token>" or Basic auth with a Cairn token (cairn_...) as password',
      );
    }
    const hash = hashTokenSecret(secret);
    const remembered = this.#known.get(hash, this.#now());
    if (remembered) {
      await this.#touch(remembered.tokenId);
      return remembered;
    }
    const mark = this.#known.mark();
    const row = await this.#byHash.get(hash);
    // The lookup is by hash; compare again in constant time so no timing tells how close a guess was.
    if (!row || !timingSafeEqual(Buffer.from(row.hash), Buffer.from(hash))) {
      throw new CairnError('UNAUTHENTICATED', 'Cannot authenticate: unknown token');
    }
    const now = this.#now();
    if (row.revoked_at !== null)
      throw new CairnError('UNAUTHENTICATED', `Cannot authenticate: token '${row.name}' was revoked`);
    if (row.expires_at !== null && row.expires_at <= now) {
      throw new CairnError('UNAUTHENTICATED', `Cannot authenticate: token '${row.name}' has expired`);
    }
    const scopes: TokenScope[] = [];
    for (const s of JSON.parse(row.scopes) as string[]) {
      const scope = parseTokenScope(s);
      if (!('error' in scope)) scopes.push(scope);
    }
    const principal: Principal = {
      tokenId: row.id,
      tokenName: row.name,
      workspaceId: row.workspace_id,
      scopes,
    };
    this.#known.set(hash, { principal, expiresAt: row.expires_at }, now, mark);
    await this.#touch(row.id);
    return principal;
  }

  #touchDue(tokenId: string, now: number): boolean {
    return now - (this.#touched.get(tokenId) ?? 0) > TOUCH_INTERVAL_MS;
  }

  /** Records the token's last use, at most once per {@link TOUCH_INTERVAL_MS}. */
  async #touch(tokenId: string): Promise<void> {
    const now = this.#now();
    if (!this.#touchDue(tokenId, now)) return;
    this.#touched.set(tokenId, now);
    await this.#touches.get(tokenId);
  }
}

function secretFromHeader(header: string): string | undefined {
  const space = header.indexOf(' ');
  if (space < 0) return undefined;
  const scheme = header.slice(0, space).toLowerCase();
  const value = header.slice(space + 1).trim();
  if (scheme === 'bearer') return value;
  if (scheme === 'basic') {
    const decoded = Buffer.from(value, 'base64').toString('utf8');
    const colon = decoded.indexOf(':');
    return colon < 0 ? undefined : decoded.slice(colon + 1);
  }
  return undefined;
}
