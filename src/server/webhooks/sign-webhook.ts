import { createHmac, randomBytes } from 'node:crypto';

/** Makes a new endpoint secret: `whsec_` and the base64 of 32 random bytes (Standard Webhooks). */
export function generateWebhookSecret(): string {
  return `whsec_${randomBytes(32).toString('base64')}`;
}

/**
 * The `webhook-signature` header of Standard Webhooks for one message: `v1,<base64 of
 * HMAC-SHA256(key, "<id>.<timestamp>.<body>")>` per secret, space-separated, so that a receiver
 * holding either the old or the new secret accepts it while a secret is being rotated. The key
 * is the base64-decoded part of the secret after `whsec_`.
 */
export function signWebhook(
  secrets: readonly string[],
  message: { id: string; timestamp: number; body: string },
): string {
  return secrets
    .map((secret) => {
      const key = Buffer.from(secret.replace(/^whsec_/, ''), 'base64');
      const mac = createHmac('sha256', key)
        .update(`${message.id}.${message.timestamp}.${message.body}`)
        .digest('base64');
      return `v1,${mac}`;
    })
    .join(' ');
}
