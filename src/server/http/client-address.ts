import type { HttpBindings } from '@hono/node-server';
import type { Context } from 'hono';

/** The client's address, as the socket sees it (a proxy in front is one address for all). */
export function clientAddress(c: Context): string {
  return (c.env as HttpBindings | undefined)?.incoming?.socket.remoteAddress ?? 'unknown';
}
