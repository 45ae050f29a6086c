import type { Command } from 'commander';
import { CairnError } from '../lib/cairn-error.ts';
import { durationMs } from '../protocol/duration.ts';
import { parseOrThrow } from '../protocol/parse-or-throw.ts';
import {
  createdWebhookSchema,
  createWebhookBodySchema,
  WEBHOOK_EVENTS,
  webhookDeliveryInfoSchema,
  webhookDeliveryListSchema,
  webhookInfoSchema,
  webhookListSchema,
} from '../protocol/webhook-schemas.ts';
import type { CommandContext } from './command-context.ts';
import { formatTable } from './format-table.ts';

/** A webhook id argument: a whole number from 1. */
function webhookId(text: string): string {
  if (!/^[1-9][0-9]{0,15}$/.test(text))
    throw new CairnError(
      'INVALID_ARGUMENT',
      `Cannot use the webhook id: expected a whole number from 1 (${text})`,
    );
  return text;
}

/** `cairn webhook create|list|delete|enable|test|deliveries`. */
export function registerWebhookCommands(program: Command, ctx: CommandContext): void {
  const webhook = program
    .command('webhook')
    .description('send signed notifications of deployments, rollouts and agents to a URL (admin)');
  webhook
    .command('create')
    .description('add a webhook endpoint; prints its signing secret once, on stdout')
    .argument('<url>', 'http(s) URL the events are posted to')
    .requiredOption(
      '--event <event...>',
      `events to send (repeatable, or comma-separated): ${WEBHOOK_EVENTS.join(', ')}`,
    )
    .option('--json', 'print JSON (with the secret)')
    .action(async (url: string, opts: { event: string[]; json?: boolean }) => {
      const events = opts.event.flatMap((e) => e.split(',')).filter((e) => e !== '');
      // Checked here too, for an error before any request (the server checks it the same way).
      const body = parseOrThrow(createWebhookBodySchema, { url, events }, { action: 'create a webhook' });
      const created = await ctx.client().request('POST', 'webhooks', createdWebhookSchema, body);
      if (opts.json) {
        ctx.io.stdout.write(`${JSON.stringify(created, null, 2)}\n`);
        return;
      }
      ctx.io.stdout.write(`${created.secret}\n`);
      ctx.io.stderr.write(
        `created webhook ${created.id} for ${created.url} (${created.events.join(', ')}); its secret is shown only this once\n`,
      );
    });
  webhook
    .command('list')
    .description('list webhook endpoints and whether each is active or disabled (never their secrets)')
    .option('--json', 'print JSON')
    .action(async (opts: { json?: boolean }) => {
      const { webhooks } = await ctx.client().request('GET', 'webhooks', webhookListSchema);
      if (opts.json) {
        ctx.io.stdout.write(`${JSON.stringify(webhooks, null, 2)}\n`);
        return;
      }
      ctx.io.stdout.write(
        formatTable(
          ['ID', 'URL', 'EVENTS', 'STATE', 'LAST SUCCESS'],
          webhooks.map((w) => [
            String(w.id),
            w.url,
            w.events.join(','),
            w.state === 'disabled' ? `disabled: ${w.disabledReason ?? ''}` : 'active',
            w.lastSuccessAt ?? 'never',
          ]),
        ),
      );
    });
  webhook
    .command('delete')
    .description('delete a webhook endpoint; its pending deliveries are dropped')
    .argument('<id>', 'webhook id (see cairn webhook list)')
    .action(async (id: string) => {
      await ctx.client().request('DELETE', `webhooks/${webhookId(id)}`, null);
      ctx.io.stderr.write(`deleted webhook ${id}\n`);
    });
  webhook
    .command('enable')
    .description('enable a webhook endpoint that was disabled (after a 410, or failing for a day)')
    .argument('<id>', 'webhook id')
    .action(async (id: string) => {
      const w = await ctx.client().request('POST', `webhooks/${webhookId(id)}/enable`, webhookInfoSchema, {});
      ctx.io.stderr.write(`enabled webhook ${w.id} (${w.url})\n`);
    });
  webhook
    .command('rotate')
    .description("replace an endpoint's signing secret, printed once; the old one also signs for --keep")
    .argument('<id>', 'webhook id')
    .option('--keep <duration>', 'how long the old secret still signs: 0 to 7d', '1d')
    .action(async (id: string, opts: { keep: string }) => {
      const ms = durationMs(opts.keep);
      if (ms === undefined || ms > 7 * 86_400_000)
        throw new CairnError(
          'INVALID_ARGUMENT',
          `Cannot use --keep: expected a duration from 0 to 7d, such as 12h (${opts.keep})`,
        );
      const w = await ctx.client().request('POST', `webhooks/${webhookId(id)}/rotate`, createdWebhookSchema, {
        keepSeconds: Math.round(ms / 1000),
      });
      ctx.io.stdout.write(`${w.secret}\n`);
      ctx.io.stderr.write(
        `rotated the secret of webhook ${w.id}; it is shown only this once. The old secret signs too until ${w.previousSecretUntil}\n`,
      );
    });
  webhook
    .command('test')
    .description('send a webhook.test event to an endpoint now')
    .argument('<id>', 'webhook id')
    .action(async (id: string) => {
      const d = await ctx
        .client()
        .request('POST', `webhooks/${webhookId(id)}/test`, webhookDeliveryInfoSchema, {});
      ctx.io.stdout.write(`${d.messageId}\n`);
      ctx.io.stderr.write(
        `queued webhook.test as delivery ${d.id}; see its status with cairn webhook deliveries ${id}\n`,
      );
    });
  webhook
    .command('deliveries')
    .description("list an endpoint's recent deliveries with their status")
    .argument('<id>', 'webhook id')
    .option('--limit <n>', 'how many, newest first', '20')
    .option('--json', 'print JSON')
    .action(async (id: string, opts: { limit: string; json?: boolean }) => {
      if (!/^[1-9][0-9]{0,2}$/.test(opts.limit))
        throw new CairnError(
          'INVALID_ARGUMENT',
          `Cannot use --limit: expected a number from 1 to 500 (${opts.limit})`,
        );
      const { deliveries } = await ctx
        .client()
        .request(
          'GET',
          `webhooks/${webhookId(id)}/deliveries?limit=${opts.limit}`,
          webhookDeliveryListSchema,
        );
      if (opts.json) {
        ctx.io.stdout.write(`${JSON.stringify(deliveries, null, 2)}\n`);
        return;
      }
      ctx.io.stdout.write(
        formatTable(
          ['ID', 'EVENT', 'STATE', 'ATTEMPTS', 'LAST STATUS', 'CREATED', 'ERROR'],
          deliveries.map((d) => [
            String(d.id),
            d.event,
            d.state,
            String(d.attempts),
            d.lastStatus === null ? '-' : String(d.lastStatus),
            d.createdAt,
            d.lastError ?? '',
          ]),
        ),
      );
    });
}
