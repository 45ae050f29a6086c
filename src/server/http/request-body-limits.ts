import type { IncomingMessage, ServerResponse } from 'node:http';
import type { MiddlewareHandler } from 'hono';
import { bodyLimit } from 'hono/body-limit';
import { CairnError } from '../../lib/cairn-error.ts';

/** Largest sign-in or dashboard form (a token, a CSRF token, a path to go back to). */
export const MAX_FORM_BYTES = 8 * 1024;

/** Largest JSON body an API route reads. */
export const MAX_JSON_BYTES = 1024 * 1024;

/**
 * Largest deploy.json: one line per agent, so a fleet of 10,000 with long NixOS system paths
 * needs more than 1 MiB; 16 MiB leaves room for 100,000.
 */
export const MAX_DEPLOY_JSON_BYTES = 16 * 1024 * 1024;

/** Routes whose body is a deploy.json (creating and planning a rollout). */
const DEPLOY_JSON_ROUTE = /^\/api\/v1\/workspaces\/[^/]+\/(rollouts|plan)$/;

/** The most bytes a request to `path` may carry (the binary cache is not served here). */
export function maxBodyBytes(path: string): number {
  if (!path.startsWith('/api/')) return MAX_FORM_BYTES;
  return DEPLOY_JSON_ROUTE.test(path) ? MAX_DEPLOY_JSON_BYTES : MAX_JSON_BYTES;
}

/**
 * Limits every body of the API and dashboard while it streams: a declared length over the limit
 * is refused before anything is read, and a chunked body is counted as it arrives and refused
 * (413 TOO_LARGE) as soon as it passes the limit, so no body larger than its route's limit is
 * ever held in memory. The connection is closed soon after the answer (see {@link cutSlowBody}).
 */
export function limitRequestBodies(): MiddlewareHandler {
  const limits = new Map<number, MiddlewareHandler>();
  return async (c, next) => {
    const max = maxBodyBytes(c.req.path);
    let limit = limits.get(max);
    if (!limit) {
      limit = bodyLimit({
        maxSize: max,
        onError: () => {
          throw new CairnError('TOO_LARGE', `Cannot read the request: body larger than ${max} bytes`);
        },
      });
      limits.set(max, limit);
    }
    return await limit(c, next);
  };
}

/** Most of an unwanted body read and dropped after the answer, and for how long. */
const LINGER_BYTES = 16 * 1024 * 1024;
const LINGER_MS = 1000;

/** Reads and drops what is left of a body for a moment, then closes the connection. */
function lingerThenClose(req: IncomingMessage): void {
  let read = 0;
  const close = () => {
    clearTimeout(timer);
    req.off('data', onData);
    req.socket.destroy();
  };
  const onData = (chunk: Buffer) => {
    read += chunk.length;
    if (read > LINGER_BYTES) close();
  };
  // Not unref'd: a server shutting down waits for this connection to be closed.
  const timer = setTimeout(close, LINGER_MS);
  req.on('data', onData);
  req.once('end', () => clearTimeout(timer));
  req.resume();
}

/**
 * Closes the connection after an answer given before the request's body was read, and cuts a
 * request whose body has not fully arrived `timeoutMs` after its headers (a client
 * sending a byte now and then would otherwise hold its connection forever): answers 408 when
 * nothing was answered yet, and closes the connection. Not for NAR uploads, which may take long
 * and are limited by the binary cache itself.
 */
export function cutSlowBody(req: IncomingMessage, res: ServerResponse, timeoutMs: number): void {
  const hasBody =
    req.headers['transfer-encoding'] !== undefined || Number(req.headers['content-length'] ?? 0) > 0;
  if (!hasBody || req.readableEnded) return;
  // Answered before its body was read (refused: 401, 403, 413): the rest is read and dropped
  // for a moment, so that the client reads the answer before the connection closes (closing
  // with data unread would reset it and could lose the answer), then the connection is closed.
  res.once('finish', () => {
    if (!req.readableEnded) lingerThenClose(req);
  });
  const timer = setTimeout(() => {
    if (req.readableEnded) return;
    if (!res.headersSent) {
      const body = JSON.stringify({
        code: 'REQUEST_TIMEOUT',
        message: `Cannot read the request: its body did not arrive within ${timeoutMs / 1000}s`,
      });
      res.writeHead(408, { 'Content-Type': 'application/json', Connection: 'close' });
      res.end(body);
    }
    // Nothing more is read from this client.
    setImmediate(() => req.socket.destroy());
  }, timeoutMs);
  timer.unref();
  const clear = () => clearTimeout(timer);
  req.once('end', clear);
  req.once('close', clear);
  res.once('close', clear);
}
