import { z } from 'zod';

/** Every event a webhook can subscribe to. */
export const WEBHOOK_EVENTS = [
  'deployment.started',
  'deployment.succeeded',
  'deployment.failed',
  'deployment.rolled-back',
  'rollout.succeeded',
  'rollout.failed',
  'rollout.paused',
  'agent.offline',
  'agent.reboot-required',
] as const;

/** An event a webhook can subscribe to. */
export const webhookEventSchema = z.enum(WEBHOOK_EVENTS, {
  error: (issue) => `unknown event '${String(issue.input)}'; expected one of ${WEBHOOK_EVENTS.join(', ')}`,
});
export type WebhookEvent = z.infer<typeof webhookEventSchema>;

/** The event `cairn webhook test` sends, whatever the endpoint subscribed to. */
export const WEBHOOK_TEST_EVENT = 'webhook.test';

/** An endpoint URL: http or https, no credentials in it, at most 2,000 characters. */
export const webhookUrlSchema = z
  .string()
  .max(2000, 'must be at most 2000 characters')
  .superRefine((text, ctx) => {
    let url: URL;
    try {
      url = new URL(text);
    } catch {
      ctx.addIssue({ code: 'custom', message: `is not a URL (${text})` });
      return;
    }
    if (url.protocol !== 'http:' && url.protocol !== 'https:')
      ctx.addIssue({ code: 'custom', message: `must be an http or https URL (${text})` });
    else if (url.username !== '' || url.password !== '')
      ctx.addIssue({ code: 'custom', message: 'must not hold a user name or password' });
    else if (url.hash !== '') ctx.addIssue({ code: 'custom', message: 'must not hold a #fragment' });
  });

/** `POST /api/v1/workspaces/:ws/webhooks` */
export const createWebhookBodySchema = z.strictObject({
  url: webhookUrlSchema,
  events: z
    .array(webhookEventSchema)
    .min(1, 'name at least one event')
    .transform((events) => [...new Set(events)]),
});

/** `POST /api/v1/workspaces/:ws/webhooks/:id/rotate`: how long the old secret still signs (default 1 day, at most 7). */
export const rotateWebhookBodySchema = z.strictObject({
  keepSeconds: z
    .number()
    .int()
    .min(0)
    .max(7 * 86_400)
    .optional(),
});

/** A webhook endpoint as listed: never its secret. */
export const webhookInfoSchema = z.object({
  id: z.number(),
  url: z.string(),
  events: z.array(z.string()),
  createdAt: z.string(),
  createdBy: z.string(),
  /** `active`, or `disabled` with `disabledReason` saying why. */
  state: z.enum(['active', 'disabled']),
  disabledAt: z.string().nullable(),
  disabledReason: z.string().nullable(),
  lastSuccessAt: z.string().nullable(),
  /** After a rotation: until when deliveries are signed with the previous secret too. */
  previousSecretUntil: z.string().nullable(),
});
export type WebhookInfo = z.infer<typeof webhookInfoSchema>;

/** The answer to creating a webhook: the secret, shown this once. */
export const createdWebhookSchema = webhookInfoSchema.extend({ secret: z.string() });

export const webhookListSchema = z.object({ webhooks: z.array(webhookInfoSchema) });

/** One delivery of an event to an endpoint, as listed. */
export const webhookDeliveryInfoSchema = z.object({
  id: z.number(),
  webhookId: z.number(),
  messageId: z.string(),
  event: z.string(),
  state: z.enum(['pending', 'succeeded', 'failed']),
  attempts: z.number(),
  createdAt: z.string(),
  lastAttemptAt: z.string().nullable(),
  nextAttemptAt: z.string().nullable(),
  lastStatus: z.number().nullable(),
  lastError: z.string().nullable(),
});
export type WebhookDeliveryInfo = z.infer<typeof webhookDeliveryInfoSchema>;

export const webhookDeliveryListSchema = z.object({ deliveries: z.array(webhookDeliveryInfoSchema) });
