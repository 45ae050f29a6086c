import { CairnError } from '../../lib/cairn-error.ts';
import type { Principal } from './principal.ts';

// Every question "may this token do that?" is answered here, so that the API, the dashboard
// and the cache cannot drift apart on who may see or change what.

/** True when the principal holds the admin scope. */
export function isAdmin(p: Principal): boolean {
  return p.scopes.some((s) => s.kind === 'admin');
}

/** Throws FORBIDDEN unless the principal holds the admin scope. */
export function assertAdmin(p: Principal, action: string): void {
  if (!isAdmin(p))
    throw new CairnError('FORBIDDEN', `Cannot ${action}: token '${p.tokenName}' lacks the admin scope`);
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

/** True when the principal may see the whole fleet (the agent list, the dashboard): admin or activate. */
export function canViewFleet(p: Principal): boolean {
  return isAdmin(p) || p.scopes.some((s) => s.kind === 'activate');
}

/** Throws FORBIDDEN unless the principal may see the whole fleet. */
export function assertFleetViewer(p: Principal, action: string): void {
  if (!canViewFleet(p)) {
    throw new CairnError(
      'FORBIDDEN',
      `Cannot ${action}: token '${p.tokenName}' lacks the admin or activate scope`,
    );
  }
}

/** True when the principal may see one agent: whoever sees the fleet, or the agent itself. */
export function canViewAgent(p: Principal, agent: string): boolean {
  return canViewFleet(p) || p.scopes.some((s) => s.kind === 'agent' && s.agent === agent);
}

/** Throws FORBIDDEN for tokens that may read no deployment at all (cache-only tokens). */
export function assertDeploymentReader(p: Principal, action: string): void {
  if (!p.scopes.some((s) => s.kind === 'admin' || s.kind === 'activate' || s.kind === 'agent')) {
    throw new CairnError(
      'FORBIDDEN',
      `Cannot ${action}: token '${p.tokenName}' lacks the admin, activate or agent scope`,
    );
  }
}

/** Who may read a deployment of `agent`: admin, an activate token, or that agent itself. */
export function canReadDeployment(p: Principal, agent: string): boolean {
  return (
    isAdmin(p) || p.scopes.some((s) => s.kind === 'activate' || (s.kind === 'agent' && s.agent === agent))
  );
}

/** True when the principal may read `/metrics`: admin, or the `metrics` scope. */
export function canReadMetrics(p: Principal): boolean {
  return p.scopes.some((s) => s.kind === 'admin' || s.kind === 'metrics');
}
