import type { TokenScope } from '../../protocol/token-scope.ts';

/** Who is calling: the token that authenticated the request and what it may do. */
export interface Principal {
  readonly tokenId: string;
  readonly tokenName: string;
  readonly workspaceId: number;
  readonly scopes: readonly TokenScope[];
}

/** True when the principal holds the admin scope. */
export function isAdmin(p: Principal): boolean {
  return p.scopes.some((s) => s.kind === 'admin');
}

/** True when the principal may upload to the cache (admin, or `cache:<name>:push`). */
export function canPush(p: Principal, cache: string): boolean {
  return p.scopes.some(
    (s) => s.kind === 'admin' || (s.kind === 'cache' && s.cache === cache && s.access === 'push'),
  );
}

/** True when the principal may download from the cache (push implies pull). */
export function canPull(p: Principal, cache: string): boolean {
  return p.scopes.some((s) => s.kind === 'admin' || (s.kind === 'cache' && s.cache === cache));
}
