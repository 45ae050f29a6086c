import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { CAIRN_VERSION } from '../../lib/version.ts';
import { checkedLookup, ipLiteral, privateRange } from './outbound-address.ts';

/** What one attempt to send a webhook came to. */
export type SendOutcome =
  /** The receiver answered (any status; 3xx is not followed). */
  | { readonly kind: 'answered'; readonly status: number; readonly retryAfterMs: number | undefined }
  /** No answer: the connection failed or timed out. */
  | { readonly kind: 'error'; readonly error: string }
  /** Not sent: the address is private and private addresses are not allowed. */
  | { readonly kind: 'refused'; readonly error: string };

/** Largest part of an answer's body read (and thrown away). */
const MAX_ANSWER_BYTES = 64 * 1024;

/**
 * Posts one webhook: `body` with the Standard Webhooks headers, to `url`, with `timeoutMs` for
 * the whole exchange. Redirects are not followed (a 3xx is an answer like any other: a failure).
 * Unless `allowPrivate`, a URL whose host is, or resolves to, a loopback, private or reserved
 * address is refused before any connection is made.
 */
export async function sendWebhook(
  target: { url: string; allowPrivate: boolean; timeoutMs: number; signal?: AbortSignal },
  message: { headers: Record<string, string>; body: string },
): Promise<SendOutcome> {
  let url: URL;
  try {
    url = new URL(target.url);
  } catch {
    return { kind: 'refused', error: `not a URL (${target.url})` };
  }
  const literal = ipLiteral(url);
  if (literal !== undefined && !target.allowPrivate) {
    const range = privateRange(literal);
    if (range)
      return {
        kind: 'refused',
        error: `${literal} is a ${range} address; set CAIRN_WEBHOOK_ALLOW_PRIVATE=1 to allow it`,
      };
  }
  const request = url.protocol === 'https:' ? httpsRequest : httpRequest;
  return await new Promise<SendOutcome>((resolve) => {
    let settled = false;
    const done = (o: SendOutcome) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      target.signal?.removeEventListener('abort', stop);
      resolve(o);
    };
    const req = request(
      url,
      {
        method: 'POST',
        headers: {
          ...message.headers,
          'content-type': 'application/json',
          'content-length': String(Buffer.byteLength(message.body)),
          'user-agent': `cairn/${CAIRN_VERSION}`,
        },
        lookup: checkedLookup(target.allowPrivate) as never,
        agent: false,
      },
      (res) => {
        let read = 0;
        res.on('data', (chunk: Buffer) => {
          read += chunk.length;
          if (read > MAX_ANSWER_BYTES) res.destroy();
        });
        const answered = () =>
          done({
            kind: 'answered',
            status: res.statusCode ?? 0,
            retryAfterMs: retryAfterMs(res.headers['retry-after']),
          });
        res.on('end', answered);
        res.on('close', answered);
        res.on('error', answered);
      },
    );
    const timer = setTimeout(() => {
      req.destroy();
      done({ kind: 'error', error: `no answer within ${target.timeoutMs} ms` });
    }, target.timeoutMs);
    const stop = () => {
      req.destroy();
      done({ kind: 'error', error: 'cut off: the server was stopping' });
    };
    if (target.signal?.aborted) stop();
    target.signal?.addEventListener('abort', stop, { once: true });
    req.on('error', (err) => {
      const refused = /CAIRN_WEBHOOK_ALLOW_PRIVATE/.test(err.message);
      done({ kind: refused ? 'refused' : 'error', error: err.message });
    });
    req.end(message.body);
  });
}

/** A `Retry-After` of seconds or an HTTP date, in ms from now; undefined when absent or unreadable. */
function retryAfterMs(value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  if (/^\d+$/.test(value.trim())) return Number(value.trim()) * 1000;
  const at = Date.parse(value);
  return Number.isNaN(at) ? undefined : Math.max(0, at - Date.now());
}
