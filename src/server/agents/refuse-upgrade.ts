import { STATUS_CODES } from 'node:http';
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import { errorResponse } from '../http/error-response.ts';

/**
 * Answers a refused WebSocket upgrade with an HTTP error whose JSON body says why (the same body
 * as every other error of the API), then closes the socket.
 */
export function refuseUpgrade(socket: Duplex, err: unknown, options: { readonly log: Logger }): void {
  const { status, body, headers } = errorResponse(err, options.log);
  const text = JSON.stringify(body);
  const extra = Object.entries(headers)
    .map(([k, v]) => `${k}: ${v}\r\n`)
    .join('');
  socket.end(
    `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? 'Error'}\r\n${extra}` +
      `Content-Type: application/json\r\nContent-Length: ${Buffer.byteLength(text)}\r\nConnection: close\r\n\r\n${text}`,
  );
}
