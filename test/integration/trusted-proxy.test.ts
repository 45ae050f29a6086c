import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { type NginxProcess, startNginx } from '../helpers/nginx-process.ts';
import { freePort, type ServerProcess, spawnServer } from '../helpers/server-process.ts';

/** A token of the right shape that no server issued. */
const BAD_TOKEN = `cairn_${'B'.repeat(43)}`;
/** The server's default burst of failed authentications per address. */
const BURST = 30;

/**
 * GET of the caches as `token` from the loopback address `localAddress` (so that clients have
 * addresses of their own), with `forwardedFor` as X-Forwarded-For when given: the status.
 */
function get(url: string, o: { localAddress: string; token: string; forwardedFor?: string }) {
  return new Promise<number>((resolve, reject) => {
    const req = request(`${url}/api/v1/workspaces/default/caches`, {
      localAddress: o.localAddress,
      headers: {
        Authorization: `Bearer ${o.token}`,
        ...(o.forwardedFor === undefined ? {} : { 'X-Forwarded-For': o.forwardedFor }),
      },
      agent: false,
    });
    req.on('response', (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.on('error', reject);
    req.end();
  });
}

/** Fails `count` authentications in a row, returning the statuses. */
async function hammer(url: string, o: { localAddress: string; forwardedFor?: (i: number) => string }) {
  const statuses: number[] = [];
  for (let i = 0; i < BURST + 10; i++)
    statuses.push(
      await get(url, {
        localAddress: o.localAddress,
        token: BAD_TOKEN,
        ...(o.forwardedFor ? { forwardedFor: o.forwardedFor(i) } : {}),
      }),
    );
  return statuses;
}

/**
 * The failed-authentication limit behind a load balancer: real `cairn server` processes and
 * Debian's nginx with the configuration of docs/scale-out.md, clients on 127.0.0.2 and 127.0.0.3.
 */
describe('--trusted-proxy', () => {
  const cleanup: Array<() => Promise<unknown>> = [];
  after(async () => {
    for (const c of cleanup.reverse()) await c().catch(() => {});
  });

  async function server(args: string[]): Promise<ServerProcess & { adminToken: string }> {
    const dir = await mkdtemp(join(tmpdir(), 'cairn-trusted-proxy-'));
    cleanup.push(() => rm(dir, { recursive: true, force: true }));
    const s = await spawnServer({ port: await freePort(), dataDir: dir, args });
    cleanup.push(() => s.kill('SIGKILL'));
    const adminToken = (await readFile(join(dir, 'admin-token'), 'utf8')).trim();
    return Object.assign(s, { adminToken });
  }

  it('behind nginx, limits the client that hammers bad tokens and still serves another one', async () => {
    // nginx reaches the server from 127.0.0.1.
    const s = await server(['--trusted-proxy', '127.0.0.1']);
    const nginx: NginxProcess = await startNginx([new URL(s.url).host]);
    cleanup.push(() => nginx.stop());

    const statuses = await hammer(nginx.url, { localAddress: '127.0.0.2' });
    assert.deepEqual(statuses.slice(0, 5), [401, 401, 401, 401, 401]);
    assert.equal(statuses.at(-1), 429, statuses.join(' '));
    assert.equal(await get(nginx.url, { localAddress: '127.0.0.3', token: s.adminToken }), 200);
    // The hammering client is still refused, even with a good token, until it slows down.
    assert.equal(await get(nginx.url, { localAddress: '127.0.0.2', token: s.adminToken }), 429);
  });

  it('ignores X-Forwarded-For from a client that is not a trusted proxy', async () => {
    const s = await server(['--trusted-proxy', '127.0.0.1']);
    // A new address in each request's header: the limit still counts the client's own address.
    const statuses = await hammer(s.url, {
      localAddress: '127.0.0.2',
      forwardedFor: (i) => `198.51.100.${i}`,
    });
    assert.equal(statuses.at(-1), 429, statuses.join(' '));
    assert.equal(await get(s.url, { localAddress: '127.0.0.3', token: s.adminToken }), 200);
  });

  it('without the setting, reads no X-Forwarded-For: behind nginx one client limits them all', async () => {
    const s = await server([]);
    const spoofed = await hammer(s.url, {
      localAddress: '127.0.0.1',
      forwardedFor: (i) => `198.51.100.${i}`,
    });
    assert.equal(spoofed.at(-1), 429, spoofed.join(' '));

    const t = await server([]);
    const nginx: NginxProcess = await startNginx([new URL(t.url).host]);
    cleanup.push(() => nginx.stop());
    const statuses = await hammer(nginx.url, { localAddress: '127.0.0.2' });
    assert.equal(statuses.at(-1), 429, statuses.join(' '));
    // Everyone comes from nginx's address: the other client is refused too.
    assert.equal(await get(nginx.url, { localAddress: '127.0.0.3', token: t.adminToken }), 429);
  });

  it('refuses to start with an address that is not one, saying which', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'cairn-trusted-proxy-'));
    cleanup.push(() => rm(dir, { recursive: true, force: true }));
    await assert.rejects(
      spawnServer({
        port: await freePort(),
        dataDir: dir,
        args: ['--trusted-proxy', '127.0.0.1,nginx.local'],
      }),
      /exited 2: .*Cannot use --trusted-proxy: expected an IPv4 or IPv6 address, or ADDRESS\/PREFIX-LENGTH \(nginx\.local\)/,
    );
  });
});
