import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import type { Readable } from 'node:stream';
import { errorFromResponse } from './api-client.ts';

/**
 * How long an upload waits for `100 Continue` before it sends its body anyway, as curl does (its
 * `--expect100-timeout`, 1 s): a proxy that drops `Expect` never answers it.
 */
export const EXPECT_CONTINUE_WAIT_MS = 1000;

/**
 * PUTs a body of known length, streaming it (fetch in Node 20 cannot stream a request body of
 * known length without buffering). Sends `Expect: 100-continue`, so a refused upload costs no
 * bytes; without `100 Continue` after {@link EXPECT_CONTINUE_WAIT_MS}, sends the body anyway.
 * @throws CairnError with the server's error code when the answer is not 2xx.
 */
export async function httpPut(
  url: string,
  body: { stream: Readable; length: number } | string,
  options: { authorization?: string | undefined; contentType: string; continueWaitMs?: number },
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
  let waiting: NodeJS.Timeout | undefined;
  await new Promise<void>((resolve, reject) => {
    const req = request(target, { method: 'PUT', headers }, (res) => {
      clearTimeout(waiting);
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
    req.on('error', (err) => {
      clearTimeout(waiting);
      reject(err);
    });
    if (typeof body === 'string') req.end(body);
    else {
      let sending = false;
      const send = () => {
        clearTimeout(waiting);
        if (sending) return;
        sending = true;
        body.stream.pipe(req);
      };
      req.on('continue', send);
      // The headers go now: the wait for 100 Continue starts when the server has them.
      req.flushHeaders();
      waiting = setTimeout(send, options.continueWaitMs ?? EXPECT_CONTINUE_WAIT_MS);
      body.stream.on('error', (err) => req.destroy(err));
    }
  });
}
