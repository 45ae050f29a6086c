import type { Hono } from 'hono';
import { CairnError } from '../../lib/cairn-error.ts';
import { createEnrolTokenBodySchema, type EnrolTokenInfo } from '../../protocol/enrol-schemas.ts';
import { parseOrThrow, validationError } from '../../protocol/parse-or-throw.ts';
import { idPathSchema } from '../../protocol/request-params.ts';
import { assertAdmin } from '../auth/permissions.ts';
import { generateEnrolTokenSecret, hashTokenSecret } from '../auth/token-secret.ts';
import type { AuditRepository } from '../db/audit-repository.ts';
import type { EnrolTokenRepository, EnrolTokenRow } from '../db/enrol-token-repository.ts';
import type { ApiEnv } from './api-routes.ts';
import { parseJsonBody } from './parse-json-body.ts';
import { recordAudit } from './record-audit.ts';

const iso = (ms: number | null) => (ms === null ? null : new Date(ms).toISOString());

/** Why an enrolment token can no longer enrol, or `live`. */
export function enrolTokenState(row: EnrolTokenRow, now: number): 'live' | 'revoked' | 'expired' | 'used up' {
  if (row.revoked_at !== null) return 'revoked';
  if (row.expires_at !== null && row.expires_at <= now) return 'expired';
  if (row.uses >= row.max_uses) return 'used up';
  return 'live';
}

/** An enrolment token row as the API shows it. */
export function toEnrolTokenInfo(row: EnrolTokenRow, now: number): EnrolTokenInfo {
  return {
    id: row.id,
    uses: row.uses,
    maxUses: row.max_uses,
    tags: JSON.parse(row.tags) as string[],
    namePattern: row.name_pattern,
    requireApproval: row.require_approval === 1,
    createdAt: new Date(row.created_at).toISOString(),
    createdBy: row.created_by,
    expiresAt: iso(row.expires_at),
    revokedAt: iso(row.revoked_at),
    state: enrolTokenState(row, now),
  };
}

/** `enrol-tokens` routes, for admins: create (the secret shown once), list, revoke. */
export function registerEnrolTokenRoutes(
  api: Hono<ApiEnv>,
  deps: { enrolTokens: EnrolTokenRepository; audit: AuditRepository; now: () => number },
): void {
  api.post('/workspaces/:ws/enrol-tokens', async (c) => {
    assertAdmin(c.var.principal, 'create an enrolment token');
    const body = await parseJsonBody(c, createEnrolTokenBodySchema, 'create an enrolment token');
    const now = deps.now();
    const expiresAt = body.expiresAt === undefined ? null : Date.parse(body.expiresAt);
    // A token born expired is a mistake (a typo in a date, a clock off), never what was meant.
    if (expiresAt !== null && expiresAt <= now) {
      throw validationError('create an enrolment token', [
        { field: 'expiresAt', message: `must be in the future (${body.expiresAt} is not)` },
      ]);
    }
    const secret = generateEnrolTokenSecret();
    const row = await deps.enrolTokens.create({
      workspaceId: c.var.workspaceId,
      hash: hashTokenSecret(secret),
      maxUses: body.uses,
      tags: body.tags,
      namePattern: body.namePattern ?? null,
      requireApproval: body.requireApproval,
      createdAt: now,
      createdBy: c.var.principal.tokenName,
      expiresAt,
    });
    const info = toEnrolTokenInfo(row, now);
    await recordAudit(deps, c, {
      action: 'enrol-token.create',
      target: String(row.id),
      detail: {
        uses: info.maxUses,
        expiresAt: info.expiresAt,
        tags: info.tags,
        namePattern: info.namePattern,
        requireApproval: info.requireApproval,
      },
    });
    return c.json({ ...info, token: secret }, 201);
  });

  api.get('/workspaces/:ws/enrol-tokens', async (c) => {
    assertAdmin(c.var.principal, 'list enrolment tokens');
    const now = deps.now();
    const rows = await deps.enrolTokens.list(c.var.workspaceId);
    return c.json({ enrolTokens: rows.map((r) => toEnrolTokenInfo(r, now)) });
  });

  // Agents it enrolled keep their own tokens: revoking it only stops further enrolments.
  api.delete('/workspaces/:ws/enrol-tokens/:id', async (c) => {
    assertAdmin(c.var.principal, 'revoke an enrolment token');
    const { id } = parseOrThrow(idPathSchema, c.req.param(), { action: 'revoke an enrolment token' });
    if (!(await deps.enrolTokens.revoke(c.var.workspaceId, id, deps.now()))) {
      throw new CairnError(
        'NOT_FOUND',
        `Cannot revoke enrolment token: no live enrolment token with id ${id}`,
      );
    }
    await recordAudit(deps, c, { action: 'enrol-token.revoke', target: String(id) });
    return c.body(null, 204);
  });
}
