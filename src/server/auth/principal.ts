import { CairnError } from '../../lib/cairn-error.ts';
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

/**
 * True when the principal may download from the cache: push implies pull, and an agent may pull
 * from every cache of its workspace (the caller checks the workspace), which is how it realises
 * closures from private caches with its own token.
 */
export function canPull(p: Principal, cache: string): boolean {
  return p.scopes.some(
    (s) => s.kind === 'admin' || s.kind === 'agent' || (s.kind === 'cache' && s.cache === cache),
  );
}

/** True when the principal may deploy to the agent (admin, `activate`, or `activate:<agents>` naming it). */
export function canActivate(p: Principal, agent: string): boolean {
  return p.scopes.some(
    (s) => s.kind === 'admin' || (s.kind === 'activate' && (s.agents === null || s.agents.includes(agent))),
  );
}

/** Throws FORBIDDEN unless the principal holds the admin scope. */
export function assertAdmin(p: Principal, action: string): void {
  if (!isAdmin(p))
    throw new CairnError('FORBIDDEN', `Cannot ${action}: token '${p.tokenName}' lacks the admin scope`);
}
