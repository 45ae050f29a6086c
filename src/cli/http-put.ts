import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import type { Readable } from 'node:stream';
import { errorFromResponse } from './api-client.ts';

/**
 * PUTs a body of known length, streaming it (fetch in Node 20 cannot stream a request body of
 * known length without buffering). Sends `Expect: 100-continue`, so a refused upload costs no bytes.
 * @throws CairnError with the server's error code when the answer is not 2xx.
 */
export async function httpPut(
  url: string,
  body: { stream: Readable; length: number } | string,
  options: { authorization?: string | undefined; contentType: string },
): Promise<void> {
  const target = new URL(url);
  const request = target.protocol === 'https:' ? httpsRequest : httpRequest;
  const length = typeof body === 'string' ? Buffer.byteLength(body) : body.length;
  const headers: Record<string, string | number> = {
    'Content-Type': options.contentType,
    'Content-Length': length,
  };
  if (options.authorization) headers.Authorization = options.authorization;
  if (typeof body !== 'string') headers.Expect = '100-continue';
  await new Promise<void>((resolve, reject) => {
    const req = request(target, { method: 'PUT', headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (d: Buffer) => chunks.push(d));
      res.on('end', () => {
        const status = res.statusCode ?? 0;
        if (status >= 200 && status < 300) resolve();
        else reject(errorFromResponse(status, Buffer.concat(chunks).toString('utf8'), `PUT ${url}`));
      });
      res.on('error', reject);
      if (typeof body !== 'string') {
        // The answer ends the upload, even one refused before or while its body was sent:
        // release the body's source (a nix-store process, a file) now, not when collected.
        body.stream.unpipe(req);
        body.stream.destroy();
      }
    });
    req.on('error', reject);
    if (typeof body === 'string') req.end(body);
    else {
      req.on('continue', () => body.stream.pipe(req));
      body.stream.on('error', (err) => req.destroy(err));
    }
  });
}
