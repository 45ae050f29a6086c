import { z } from 'zod';

/** Names of caches, agents and workspaces: what a URL path segment and a file name can safely hold. */
export const NAME_PATTERN = /^[a-z0-9][a-z0-9._-]{0,62}$/;

/** A name of a cache, agent or workspace. */
export const nameSchema = z
  .string()
  .regex(
    NAME_PATTERN,
    'must be 1-63 characters of a-z, 0-9, ".", "_" and "-", starting with a letter or digit',
  );

/**
 * A token's rights, written as strings so they read well on a command line and in a table:
 * `admin`; `cache:<name>:push` (implies pull) and `cache:<name>:pull`; `activate` or
 * `activate:<agent>,<agent>`; `agent:<name>`; `metrics` (read `/metrics`, nothing else).
 */
export type TokenScope =
  | { readonly kind: 'admin' }
  | { readonly kind: 'cache'; readonly cache: string; readonly access: 'push' | 'pull' }
  | { readonly kind: 'activate'; readonly agents: readonly string[] | null }
  | { readonly kind: 'agent'; readonly agent: string }
  | { readonly kind: 'metrics' };

/** Parses one scope string; returns an error message instead of throwing. */
export function parseTokenScope(text: string): TokenScope | { error: string } {
  if (text === 'admin') return { kind: 'admin' };
  if (text === 'metrics') return { kind: 'metrics' };
  const parts = text.split(':');
  const [kind, a, b] = parts;
  if (kind === 'cache' && parts.length === 3 && a && NAME_PATTERN.test(a) && (b === 'push' || b === 'pull')) {
    return { kind: 'cache', cache: a, access: b };
  }
  if (kind === 'activate' && parts.length === 1) return { kind: 'activate', agents: null };
  if (kind === 'activate' && parts.length === 2 && a) {
    const agents = a.split(',');
    if (agents.every((n) => NAME_PATTERN.test(n))) return { kind: 'activate', agents };
  }
  if (kind === 'agent' && parts.length === 2 && a && NAME_PATTERN.test(a)) return { kind: 'agent', agent: a };
  return {
    error: `unknown scope '${text}'; expected admin, cache:<name>:push, cache:<name>:pull, activate[:<agent>,...] agent:<name> or metrics`,
  };
}

/** Writes a scope back as its string form. */
export function formatTokenScope(scope: TokenScope): string {
  switch (scope.kind) {
    case 'admin':
      return 'admin';
    case 'cache':
      return `cache:${scope.cache}:${scope.access}`;
    case 'activate':
      return scope.agents === null ? 'activate' : `activate:${scope.agents.join(',')}`;
    case 'agent':
      return `agent:${scope.agent}`;
    case 'metrics':
      return 'metrics';
  }
}

/** A scope string, validated and kept as a string on the wire. */
export const tokenScopeSchema = z.string().superRefine((s, ctx) => {
  const parsed = parseTokenScope(s);
  if ('error' in parsed) ctx.addIssue({ code: 'custom', message: parsed.error });
});
