import { createHash, randomBytes } from 'node:crypto';
import type { Kysely } from 'kysely';
import { parseTokenScope, type TokenScope } from '../../protocol/token-scope.ts';
import type { Principal } from '../auth/principal.ts';
import type { Database } from '../db/database-schema.ts';

/** How long a dashboard session lasts without signing in again. */
export const SESSION_TTL_MS = 12 * 60 * 60 * 1000;

/** A signed-in browser: who it acts as and the CSRF token its forms carry. */
export interface Session {
  readonly principal: Principal;
  readonly csrf: string;
}

const sha256 = (s: string) => createHash('sha256').update(s).digest('hex');

/**
 * Dashboard sessions, in SQL so that any replica can serve any browser. The cookie holds a
 * random secret; the database holds only its hash. A session acts as the token it was opened
 * with, checked again on every request: revoking or expiring the token ends the session.
 */
export class SessionStore {
  constructor(
    private readonly db: Kysely<Database>,
    private readonly now: () => number,
  ) {}

  /** Opens a session for a token; returns the cookie's secret. */
  async create(tokenId: string): Promise<string> {
    const secret = randomBytes(32).toString('base64url');
    const now = this.now();
    await this.db
      .insertInto('dashboard_sessions')
      .values({
        id: sha256(secret),
        token_id: tokenId,
        csrf: randomBytes(24).toString('base64url'),
        created_at: now,
        expires_at: now + SESSION_TTL_MS,
      })
      .execute();
    // Expired sessions are swept when new ones open: no timer needed.
    await this.db.deleteFrom('dashboard_sessions').where('expires_at', '<', now).execute();
    return secret;
  }

  /** The live session of a cookie secret, or undefined. */
  async lookup(secret: string | undefined): Promise<Session | undefined> {
    if (!secret || secret.length > 100) return undefined;
    const now = this.now();
    const row = await this.db
      .selectFrom('dashboard_sessions')
      .innerJoin('tokens', 'tokens.id', 'dashboard_sessions.token_id')
      .select([
        'dashboard_sessions.csrf',
        'dashboard_sessions.expires_at',
        'tokens.id as token_id',
        'tokens.name',
        'tokens.workspace_id',
        'tokens.scopes',
        'tokens.revoked_at',
        'tokens.expires_at as token_expires_at',
      ])
      .where('dashboard_sessions.id', '=', sha256(secret))
      .executeTakeFirst();
    if (!row || row.expires_at <= now || row.revoked_at !== null) return undefined;
    if (row.token_expires_at !== null && row.token_expires_at <= now) return undefined;
    const scopes: TokenScope[] = [];
    for (const s of JSON.parse(row.scopes) as string[]) {
      const scope = parseTokenScope(s);
      if (!('error' in scope)) scopes.push(scope);
    }
    return {
      csrf: row.csrf,
      principal: { tokenId: row.token_id, tokenName: row.name, workspaceId: row.workspace_id, scopes },
    };
  }

  /** Ends a session. */
  async delete(secret: string): Promise<void> {
    await this.db.deleteFrom('dashboard_sessions').where('id', '=', sha256(secret)).execute();
  }
}
