import type { Context, Hono } from 'hono';
import { z } from 'zod';
import { CairnError } from '../../lib/cairn-error.ts';
import { parseOrThrow } from '../../protocol/parse-or-throw.ts';
import { idPathSchema, limitParamSchema } from '../../protocol/request-params.ts';
import {
  createWebhookBodySchema,
  rotateWebhookBodySchema,
  WEBHOOK_TEST_EVENT,
  type WebhookDeliveryInfo,
  type WebhookInfo,
} from '../../protocol/webhook-schemas.ts';
import { assertAdmin } from '../auth/permissions.ts';
import type { AuditRepository } from '../db/audit-repository.ts';
import { enqueueWebhooks } from '../db/webhook-outbox.ts';
import type { WebhookDeliveryRow, WebhookEndpointRow, WebhookRepository } from '../db/webhook-repository.ts';
import { ipLiteral, privateRange } from '../webhooks/outbound-address.ts';
import { generateWebhookSecret } from '../webhooks/sign-webhook.ts';
import type { WebhookSettings } from '../webhooks/webhook-dispatcher.ts';
import type { ApiEnv } from './api-routes.ts';
import { parseJsonBody } from './parse-json-body.ts';
import { recordAudit } from './record-audit.ts';

const deliveriesQuerySchema = z.object({ limit: limitParamSchema(50, 500) });

/** What the webhook routes need. */
export interface WebhookRouteDeps {
  readonly webhooks: WebhookRepository;
  readonly webhookSettings: WebhookSettings;
  /** Sends due deliveries now (a test event). */
  readonly wakeWebhooks: () => void;
  readonly audit: AuditRepository;
  readonly now: () => number;
}

/** `webhooks` routes: create (the secret is answered once), list, delete, enable, test, deliveries. Admin only. */
export function registerWebhookRoutes(api: Hono<ApiEnv>, deps: WebhookRouteDeps): void {
  const endpointOr404 = async (c: Context<ApiEnv>, action: string) => {
    assertAdmin(c.var.principal, action);
    const { id } = parseOrThrow(idPathSchema, c.req.param(), { action });
    const row = await deps.webhooks.byId(c.var.workspaceId, id);
    if (!row) throw new CairnError('NOT_FOUND', `Cannot ${action}: no webhook with id ${id}`);
    return row;
  };

  api.post('/workspaces/:ws/webhooks', async (c) => {
    const action = 'create a webhook';
    assertAdmin(c.var.principal, action);
    const body = await parseJsonBody(c, createWebhookBodySchema, action);
    // A literal private address is refused now; a name is resolved and checked at each attempt.
    const literal = ipLiteral(new URL(body.url));
    const range = literal === undefined ? undefined : privateRange(literal);
    if (range && !deps.webhookSettings.allowPrivate) {
      throw new CairnError(
        'INVALID_ARGUMENT',
        `Cannot ${action}: ${literal} is a ${range} address, and the server sends webhooks only to public addresses unless CAIRN_WEBHOOK_ALLOW_PRIVATE=1 (${body.url})`,
        { validations: [{ field: 'url', message: `${literal} is a ${range} address` }] },
      );
    }
    const secret = generateWebhookSecret();
    const row = await deps.webhooks.create({
      workspaceId: c.var.workspaceId,
      url: body.url,
      events: body.events,
      secret,
      createdAt: deps.now(),
      createdBy: c.var.principal.tokenName,
    });
    await recordAudit(deps, c, {
      action: 'webhook.create',
      target: String(row.id),
      detail: { url: body.url, events: body.events },
    });
    return c.json({ ...toWebhookInfo(row), secret }, 201);
  });

  api.get('/workspaces/:ws/webhooks', async (c) => {
    assertAdmin(c.var.principal, 'list webhooks');
    return c.json({ webhooks: (await deps.webhooks.list(c.var.workspaceId)).map(toWebhookInfo) });
  });

  api.delete('/workspaces/:ws/webhooks/:id', async (c) => {
    const row = await endpointOr404(c, 'delete a webhook');
    await deps.webhooks.delete(c.var.workspaceId, row.id, deps.now());
    await recordAudit(deps, c, {
      action: 'webhook.delete',
      target: String(row.id),
      detail: { url: row.url },
    });
    return c.body(null, 204);
  });

  api.post('/workspaces/:ws/webhooks/:id/enable', async (c) => {
    const row = await endpointOr404(c, 'enable a webhook');
    await deps.webhooks.enable(c.var.workspaceId, row.id);
    await recordAudit(deps, c, { action: 'webhook.enable', target: String(row.id) });
    const after = await deps.webhooks.byId(c.var.workspaceId, row.id);
    return c.json(toWebhookInfo(after ?? row));
  });

  api.post('/workspaces/:ws/webhooks/:id/rotate', async (c) => {
    const action = 'rotate a webhook secret';
    const row = await endpointOr404(c, action);
    const body = await parseJsonBody(c, rotateWebhookBodySchema, action);
    const secret = generateWebhookSecret();
    const keepUntil = deps.now() + (body.keepSeconds ?? 86_400) * 1000;
    await deps.webhooks.rotate(c.var.workspaceId, row.id, secret, keepUntil);
    await recordAudit(deps, c, {
      action: 'webhook.rotate',
      target: String(row.id),
      detail: { keepSeconds: body.keepSeconds ?? 86_400 },
    });
    const after = await deps.webhooks.byId(c.var.workspaceId, row.id);
    return c.json({ ...toWebhookInfo(after ?? row), secret });
  });

  api.post('/workspaces/:ws/webhooks/:id/test', async (c) => {
    const row = await endpointOr404(c, 'test a webhook');
    if (row.disabled_at !== null)
      throw new CairnError(
        'CONFLICT',
        `Cannot test a webhook: webhook ${row.id} is disabled (${row.disabled_reason ?? 'no reason recorded'}); enable it first`,
      );
    const [deliveryId] = await enqueueWebhooks(deps.webhooks.database, [
      {
        workspaceId: c.var.workspaceId,
        event: WEBHOOK_TEST_EVENT,
        at: deps.now(),
        endpointId: row.id,
        data: { webhookId: row.id, path: '/webhooks' },
      },
    ]);
    deps.wakeWebhooks();
    const delivery =
      deliveryId === undefined ? undefined : await deps.webhooks.delivery(c.var.workspaceId, deliveryId);
    // Deleted or disabled by another request in between.
    if (!delivery)
      throw new CairnError(
        'CONFLICT',
        `Cannot test a webhook: webhook ${row.id} was deleted or disabled meanwhile`,
      );
    return c.json(toDeliveryInfo(delivery), 202);
  });

  api.get('/workspaces/:ws/webhooks/:id/deliveries', async (c) => {
    const row = await endpointOr404(c, 'list deliveries');
    const { limit } = parseOrThrow(deliveriesQuerySchema, c.req.query(), { action: 'list deliveries' });
    const rows = await deps.webhooks.deliveries(c.var.workspaceId, { endpointId: row.id, limit });
    return c.json({ deliveries: rows.map(toDeliveryInfo) });
  });
}

const iso = (ms: number | null) => (ms === null ? null : new Date(ms).toISOString());

/** An endpoint as the API shows it: never its secret. */
export function toWebhookInfo(row: WebhookEndpointRow): WebhookInfo {
  return {
    id: row.id,
    url: row.url,
    events: JSON.parse(row.events) as string[],
    createdAt: new Date(row.created_at).toISOString(),
    createdBy: row.created_by,
    state: row.disabled_at === null ? 'active' : 'disabled',
    disabledAt: iso(row.disabled_at),
    disabledReason: row.disabled_reason,
    lastSuccessAt: iso(row.last_success_at),
    previousSecretUntil: iso(row.previous_secret_until),
  };
}

/** A delivery as the API shows it. */
export function toDeliveryInfo(row: WebhookDeliveryRow): WebhookDeliveryInfo {
  return {
    id: row.id,
    webhookId: row.endpoint_id,
    messageId: row.message_id,
    event: row.event,
    state: row.state as WebhookDeliveryInfo['state'],
    attempts: row.attempts,
    createdAt: new Date(row.created_at).toISOString(),
    lastAttemptAt: iso(row.last_attempt_at),
    nextAttemptAt: row.state === 'pending' ? iso(row.next_attempt_at) : null,
    lastStatus: row.last_status,
    lastError: row.last_error,
  };
}
