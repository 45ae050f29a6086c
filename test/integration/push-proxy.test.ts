import assert from 'node:assert/strict';
import { createServer, request, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { createTestCache, rawRequest, type TestCache } from '../helpers/binary-cache.ts';
import { buildPackages, TEST_NIX_CONFIG } from '../helpers/nix.ts';
import { cli, startTestServer, type TestServer } from '../helpers/server.ts';

/**
 * A reverse proxy that drops `Expect` and never answers `100 Continue` itself, as some corporate
 * proxies and load balancers do. Node's own HTTP server, with a `checkContinue` listener that
 * treats the request as any other (not a fake of the CLI's side: the real `cairn push` runs
 * through it against a real server).
 */
async function startExpectStrippingProxy(
  target: string,
): Promise<{ url: string; server: Server; sawExpect: () => number }> {
  let expects = 0;
  const forward = (req: import('node:http').IncomingMessage, res: import('node:http').ServerResponse) => {
    if (req.headers.expect !== undefined) expects++;
    const { expect: _dropped, ...headers } = req.headers;
    const up = request(new URL(req.url ?? '/', target), { method: req.method, headers }, (upRes) => {
      res.writeHead(upRes.statusCode ?? 502, upRes.headers);
      upRes.pipe(res);
    });
    up.on('error', () => res.destroy());
    req.pipe(up);
  };
  const server = createServer(forward);
  // Without this listener Node answers 100 Continue on its own.
  server.on('checkContinue', forward);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return { url: `http://127.0.0.1:${port}`, server, sawExpect: () => expects };
}

describe('cairn push behind a proxy that drops Expect: 100-continue', () => {
  let server: TestServer;
  let cache: TestCache;
  let proxy: Awaited<ReturnType<typeof startExpectStrippingProxy>>;
  let app = '';

  before(async () => {
    server = await startTestServer();
    cache = await createTestCache(server, 'main');
    proxy = await startExpectStrippingProxy(server.url);
    const built = await buildPackages([{ name: 'pxbase' }, { name: 'pxapp', deps: ['pxbase'] }]);
    app = built.get('pxapp')!;
  });
  after(async () => {
    proxy?.server.close();
    await server.stop();
  });

  it('sends each NAR after a short wait for 100 Continue, and the closure is published', async () => {
    const started = Date.now();
    const push = await cli(['push', 'main', app], {
      CAIRN_SERVER: proxy.url,
      CAIRN_TOKEN: cache.pushToken,
      NIX_CONFIG: TEST_NIX_CONFIG,
    });
    assert.equal(push.code, 0, push.stderr);
    assert.match(push.stderr, /pushed 2 path\(s\)/);
    assert.ok(proxy.sawExpect() >= 2, 'the uploads asked for 100 Continue and got none');
    // Two NARs, each waiting about a second: far from the hang it was.
    assert.ok(Date.now() - started < 60_000);
    const hashPart = app.slice('/nix/store/'.length, '/nix/store/'.length + 32);
    const info = await rawRequest(`${cache.url}/${hashPart}.narinfo`, {
      headers: { Authorization: `Bearer ${cache.pullToken}` },
    });
    assert.equal(info.status, 200, info.body);
    assert.match(info.body, new RegExp(`^StorePath: ${app}$`, 'm'));
  });
});
