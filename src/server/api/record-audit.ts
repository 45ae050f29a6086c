import type { Context } from 'hono';
import type { AuditRepository } from '../db/audit-repository.ts';
import { clientAddress } from '../http/client-address.ts';
import type { ApiEnv } from './api-routes.ts';

/** Records who (the request's token) did `action` to `target`, from which address, now. */
export async function recordAudit(
  deps: { audit: AuditRepository; now: () => number },
  c: Context<ApiEnv>,
  entry: { action: string; target: string; detail?: Record<string, unknown> },
): Promise<void> {
  const p = c.var.principal;
  await deps.audit.record(
    {
      workspaceId: c.var.workspaceId,
      tokenId: p.tokenId,
      tokenName: p.tokenName,
      address: clientAddress(c),
      ...entry,
    },
    deps.now(),
  );
}
