import type { IncomingMessage } from 'node:http';
import type { HttpBindings } from '@hono/node-server';
import type { Context } from 'hono';

/** Each request's client address, as the app resolved it on arrival (see trusted-proxies.ts). */
const resolved = new WeakMap<IncomingMessage, string>();

/** Records the client address of a request, once, as it arrives. */
export function setClientAddress(req: IncomingMessage, address: string): void {
  resolved.set(req, address);
}

/**
 * The client's address: behind a trusted proxy, the one it forwarded; else the socket's peer
 * (a proxy that is not trusted is one address for all its clients).
 */
export function requestClientAddress(req: IncomingMessage): string {
  return resolved.get(req) ?? req.socket.remoteAddress ?? 'unknown';
}

/** {@link requestClientAddress} of a Hono request. */
export function clientAddress(c: Context): string {
  const req = (c.env as HttpBindings | undefined)?.incoming;
  return req ? requestClientAddress(req) : 'unknown';
}
