import { once } from 'node:events';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Webhook } from 'standardwebhooks';

/** One request the receiver got, and whether `standardwebhooks` verified its signature. */
export interface ReceivedWebhook {
  /** The request's path. */
  readonly path: string;
  readonly id: string;
  readonly timestamp: string;
  readonly signature: string;
  readonly body: string;
  /** The parsed payload, when the signature verified; undefined otherwise. */
  readonly payload: { type: string; timestamp: string; data: Record<string, unknown> } | undefined;
  readonly verifyError: string | undefined;
  /** The status it was answered with (undefined: held, never answered). */
  readonly status: number | undefined;
}

/**
 * A real HTTP server on 127.0.0.1:0 that receives webhooks and verifies every one with the
 * `standardwebhooks` package (the receiver side of the convention), given the endpoint's secret.
 * It answers with the statuses queued by {@link WebhookReceiver.answer} (then 200), or holds a
 * request unanswered when `'hold'` is queued. A 3xx answer redirects to `/redirected`.
 */
export interface WebhookReceiver {
  readonly url: string;
  readonly port: number;
  readonly received: ReceivedWebhook[];
  /** The secret deliveries are verified with (set once the webhook is created). */
  secret: string;
  /** Queues the answers to the next requests: statuses, or `'hold'` to never answer. */
  answer(...next: Array<number | 'hold'>): void;
  /** Resolves once `count` requests matching `filter` were received; rejects after `timeoutMs`. */
  waitFor(
    count: number,
    filter?: (w: ReceivedWebhook) => boolean,
    timeoutMs?: number,
  ): Promise<ReceivedWebhook[]>;
  close(): Promise<void>;
}

/** Starts a {@link WebhookReceiver}, on `port` if given. */
export async function startWebhookReceiver(port = 0): Promise<WebhookReceiver> {
  const received: ReceivedWebhook[] = [];
  const queue: Array<number | 'hold'> = [];
  const held: ServerResponse[] = [];
  const receiver = {
    secret: '',
  } as WebhookReceiver;
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8');
      const headers = {
        'webhook-id': String(req.headers['webhook-id'] ?? ''),
        'webhook-timestamp': String(req.headers['webhook-timestamp'] ?? ''),
        'webhook-signature': String(req.headers['webhook-signature'] ?? ''),
      };
      let payload: ReceivedWebhook['payload'];
      let verifyError: string | undefined;
      try {
        payload = new Webhook(receiver.secret).verify(body, headers) as ReceivedWebhook['payload'];
      } catch (err) {
        verifyError = (err as Error).message;
      }
      const next = queue.shift() ?? 200;
      received.push({
        path: req.url ?? '',
        id: headers['webhook-id'],
        timestamp: headers['webhook-timestamp'],
        signature: headers['webhook-signature'],
        body,
        payload,
        verifyError,
        status: next === 'hold' ? undefined : next,
      });
      if (next === 'hold') held.push(res);
      // A redirect points elsewhere on this receiver: a sender that followed it would show up there.
      else res.writeHead(next, next >= 300 && next < 400 ? { Location: '/redirected' } : {}).end();
    });
  });
  server.listen(port, '127.0.0.1');
  await once(server, 'listening');
  const actual = (server.address() as AddressInfo).port;
  return Object.assign(receiver, {
    url: `http://127.0.0.1:${actual}/hook`,
    port: actual,
    received,
    answer: (...next: Array<number | 'hold'>) => {
      queue.push(...next);
    },
    waitFor: async (
      count: number,
      filter: (w: ReceivedWebhook) => boolean = () => true,
      timeoutMs = 30_000,
    ) => {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const matching = received.filter(filter);
        if (matching.length >= count) return matching;
        if (Date.now() > deadline)
          throw new Error(
            `webhook receiver: ${matching.length} of ${count} matching requests within ${timeoutMs} ms; got ${JSON.stringify(received.map((r) => r.payload?.type ?? r.verifyError))}`,
          );
        await new Promise((r) => setTimeout(r, 50));
      }
    },
    close: async () => {
      for (const res of held) res.destroy();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  });
}
