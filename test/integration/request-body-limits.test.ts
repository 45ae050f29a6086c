import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import {
  createTestDatabase,
  startTestServer,
  type TestDatabase,
  type TestServer,
} from '../helpers/server.ts';
import { freePort, type ServerProcess, spawnServer } from '../helpers/server-process.ts';

const MiB = 1024 * 1024;

/** The resident set size of process `pid` in bytes, from /proc/PID/status. */
async function rssOf(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  const kib = /^VmRSS:\s+(\d+) kB$/m.exec(status);
  assert.ok(kib, status);
  return Number(kib[1]) * 1024;
}

/**
 * Sends `head` and then up to `bodyBytes` of body (chunked when `chunked`) as fast as the server
 * takes it, stopping when it answers or closes. Resolves with the status line it answered and
 * how many body bytes were written.
 */
function attack(
  url: string,
  head: string,
  options: { bodyBytes: number; chunked: boolean },
): Promise<{ status: string; sent: number }> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve) => {
    const socket: Socket = connect(Number(port), hostname);
    let answer = '';
    let sent = 0;
    let done = false;
    const finish = () => {
      if (done) return;
      done = true;
      socket.destroy();
      resolve({ status: answer.split('\r\n')[0] ?? '', sent });
    };
    socket.on('data', (d) => {
      answer += d.toString('latin1');
      if (answer.includes('\r\n\r\n')) finish();
    });
    socket.on('error', finish);
    socket.on('close', finish);
    const chunk = Buffer.alloc(MiB, 'a');
    const framed = Buffer.concat([Buffer.from(`${MiB.toString(16)}\r\n`), chunk, Buffer.from('\r\n')]);
    const pump = () => {
      while (!done && sent < options.bodyBytes) {
        sent += MiB;
        if (!socket.write(options.chunked ? framed : chunk)) return void socket.once('drain', pump);
      }
      if (!done && options.chunked) socket.write('0\r\n\r\n');
    };
    socket.once('connect', () => {
      socket.write(head);
      pump();
    });
  });
}

/**
 * Issue #23, finding 2: bodies were read into memory without a cap, even before sign-in. Every
 * attack runs against `cairn server` as a child process, whose RSS is read from /proc while the
 * body is being sent: it must stay within 100 MB of where it started.
 */
describe('request bodies are limited while they stream', () => {
  let dir: string;
  let database: TestDatabase;
  let server: ServerProcess;
  let adminToken: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'cairn-bodies-'));
    database = await createTestDatabase();
    const db = database.config;
    server = await spawnServer({
      port: await freePort(),
      dataDir: join(dir, 'data'),
      database: db.kind === 'sqlite' ? `sqlite:${db.file}` : db.url,
    });
    adminToken = (await readFile(join(dir, 'data', 'admin-token'), 'utf8')).trim();
  });
  after(async () => {
    await server.kill('SIGKILL');
    await database.drop();
    await rm(dir, { recursive: true, force: true });
  });

  /** Runs `attack` while sampling the server's RSS; returns its answer and the highest growth. */
  const measured = async (run: () => Promise<{ status: string; sent: number }>) => {
    const pid = server.child.pid!;
    const start = await rssOf(pid);
    let peak = start;
    const sampler = setInterval(() => {
      void rssOf(pid).then((r) => {
        peak = Math.max(peak, r);
      });
    }, 20);
    try {
      const result = await run();
      // What the server holds once the attack is over, too (the issue saw 1.8 GB kept).
      await new Promise((r) => setTimeout(r, 300));
      peak = Math.max(peak, await rssOf(pid));
      return { ...result, growth: peak - start };
    } finally {
      clearInterval(sampler);
    }
  };

  const loginHead = (extra: string) =>
    `POST /login HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n${extra}\r\n`;

  it('refuses a 400 MB sign-in form with 413 at once, without reading it', async () => {
    const r = await measured(() =>
      attack(server.url, loginHead(`Content-Length: ${400 * MiB}\r\n`), {
        bodyBytes: 400 * MiB,
        chunked: false,
      }),
    );
    assert.match(r.status, /^HTTP\/1\.1 413 /);
    assert.ok(r.growth < 100 * MiB, `RSS grew by ${(r.growth / MiB).toFixed(0)} MiB`);
  });

  it('refuses a chunked 400 MB sign-in form with 413 once it passes the form limit', async () => {
    const r = await measured(() =>
      attack(server.url, loginHead('Transfer-Encoding: chunked\r\n'), {
        bodyBytes: 400 * MiB,
        chunked: true,
      }),
    );
    assert.match(r.status, /^HTTP\/1\.1 413 /);
    assert.ok(r.growth < 100 * MiB, `RSS grew by ${(r.growth / MiB).toFixed(0)} MiB`);
    assert.ok(r.sent < 400 * MiB, 'the whole body was taken');
  });

  it('refuses a chunked 300 MB API body with 413 once it passes 1 MiB', async () => {
    const head = `POST /api/v1/workspaces/default/agents HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${adminToken}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n`;
    const r = await measured(() => attack(server.url, head, { bodyBytes: 300 * MiB, chunked: true }));
    assert.match(r.status, /^HTTP\/1\.1 413 /);
    assert.ok(r.growth < 100 * MiB, `RSS grew by ${(r.growth / MiB).toFixed(0)} MiB`);
    assert.ok(r.sent < 300 * MiB, 'the whole body was taken');
  });

  it('still signs in with a form of ordinary size after the attacks', async () => {
    const page = await fetch(`${server.url}/login`);
    const cookie = page.headers.get('set-cookie')!.split(';')[0]!;
    const nonce = cookie.split('=')[1]!;
    const res = await fetch(`${server.url}/login`, {
      method: 'POST',
      redirect: 'manual',
      headers: { Cookie: cookie, 'Content-Type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ _csrf: nonce, token: adminToken, next: '/' }),
    });
    assert.equal(res.status, 303, await res.text());
  });
});

describe('slow request bodies are cut', () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer({ headersTimeoutMs: 2000 });
  });
  after(async () => {
    await server.stop();
  });

  for (const [name, path, auth, type] of [
    ['sign-in form', '/login', false, 'application/x-www-form-urlencoded'],
    ['JSON API body', '/api/v1/workspaces/default/agents', true, 'application/json'],
  ] as const) {
    it(`cuts a ${name} sent a byte every 500 ms within the header timeout (2 s), with 408`, async () => {
      const { port } = new URL(server.url);
      const socket = connect(Number(port), '127.0.0.1');
      let answer = '';
      socket.on('data', (d) => {
        answer += d.toString();
      });
      const closed = new Promise<number>((resolve) => socket.once('close', () => resolve(Date.now())));
      socket.on('error', () => {});
      await new Promise((r) => socket.once('connect', r));
      const started = Date.now();
      socket.write(
        `POST ${path} HTTP/1.1\r\nHost: x\r\n${auth ? `Authorization: Bearer ${server.adminToken}\r\n` : ''}Content-Type: ${type}\r\nContent-Length: 1000\r\n\r\n`,
      );
      const drip = setInterval(() => {
        if (!socket.destroyed) socket.write('a');
      }, 500);
      try {
        const end = await Promise.race([
          closed,
          new Promise<number>((r) => setTimeout(() => r(Number.NaN), 10_000)),
        ]);
        assert.ok(!Number.isNaN(end), 'the connection was still open after 10 s');
        const took = end - started;
        assert.ok(took < 3500, `cut after ${took} ms`);
        assert.match(answer, /^HTTP\/1\.1 408 /);
        assert.match(answer, /REQUEST_TIMEOUT/);
      } finally {
        clearInterval(drip);
        socket.destroy();
      }
    });
  }
});
