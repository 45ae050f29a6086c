import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { WebSocket } from 'ws';
import { CLOSE_CODES, type LogLine } from '../../src/protocol/agent-protocol.ts';
import { helloAgentSocket, observedState } from '../helpers/agent-hello.ts';
import { bearer, narinfoText, rawRequest, syntheticPath } from '../helpers/binary-cache.ts';
import { adminApi, createTestDatabase, type TestServer, testPostgresUrl } from '../helpers/server.ts';
import { freePort, type ServerProcess, spawnServer } from '../helpers/server-process.ts';

/**
 * An agent whose consecutive connections land on different replicas (a load balancer, a replica
 * restarted during a deployment), spoken over real agent sockets to two server processes on one
 * PostgreSQL database.
 */
describe('an agent reconnecting across two replicas', {
  skip: !testPostgresUrl() && 'CAIRN_TEST_DATABASE_URL unset',
}, () => {
  const cleanup: Array<() => Promise<unknown>> = [];
  let a: ServerProcess & TestServer;
  let b: ServerProcess & TestServer;
  before(async () => {
    const tmp = await mkdtemp(join(tmpdir(), 'cairn-replicas-agent-'));
    cleanup.push(() => rm(tmp, { recursive: true, force: true }));
    const db = await createTestDatabase();
    cleanup.push(() => db.drop());
    const database = (db.config as { url: string }).url;
    const pa = await spawnServer({ port: await freePort(), dataDir: join(tmp, 'a'), database });
    cleanup.push(() => pa.kill('SIGKILL'));
    const pb = await spawnServer({ port: await freePort(), dataDir: join(tmp, 'b'), database });
    cleanup.push(() => pb.kill('SIGKILL'));
    const adminToken = (await readFile(join(tmp, 'a', 'admin-token'), 'utf8')).trim();
    a = Object.assign(pa, { adminToken }) as ServerProcess & TestServer;
    b = Object.assign(pb, { adminToken }) as ServerProcess & TestServer;
    await adminApi(a, 'POST', '/caches', { name: 'main' });
  });
  after(async () => {
    for (const c of cleanup.reverse()) await c().catch(() => {});
  });

  /** An agent connection to `server` that has said hello; `next(type)` waits for a message of that type. */
  const connect = (server: { url: string }, name: string, token: string) =>
    helloAgentSocket(server.url, name, token);

  /** `promise`, or a failure naming `what` after 10 s. */
  async function within<T>(promise: Promise<T>, what: string): Promise<T> {
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`Timed out waiting for ${what}`)), 10_000);
    });
    try {
      return await Promise.race([promise, late]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** A path published in the cache, for a rollout the test agent pretends to run. */
  async function publishedPath(name: string): Promise<string> {
    const p = syntheticPath(name, `${name} ${Date.now()}`);
    const push = bearer(a.adminToken);
    const nar = await rawRequest(`${a.url}/cache/main/nar/${p.narFile}`, {
      method: 'PUT',
      headers: push,
      body: p.nar,
    });
    assert.equal(nar.status, 201, nar.body);
    const put = await rawRequest(`${a.url}/cache/main/${p.hashPart}.narinfo`, {
      method: 'PUT',
      headers: push,
      body: narinfoText(p.fields),
    });
    assert.equal(put.status, 201, put.body);
    return p.storePath;
  }

  async function logsOf(server: TestServer, id: string): Promise<Array<{ seq: number; text: string }>> {
    const r = (await adminApi(server, 'GET', `/deployments/${id}/logs`)) as {
      lines: Array<{ seq: number; text: string }>;
    };
    return r.lines;
  }

  /** Waits until the deployment has `count` lines (each replica writes within about 50 ms). */
  async function waitForLines(id: string, count: number): Promise<void> {
    const deadline = Date.now() + 10_000;
    for (;;) {
      const lines = await logsOf(a, id);
      if (lines.length >= count) return;
      assert.ok(Date.now() < deadline, `${lines.length} lines of ${count}: ${JSON.stringify(lines)}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  it('numbers log lines from the database and stores lines sent again once, from A to B and back to A', async () => {
    const storePath = await publishedPath('replica-logs');
    const { token } = (await adminApi(a, 'POST', '/agents', { name: 'roamer' })) as { token: string };
    const t = Date.now();
    const act = (n: number): LogLine => ({ t, text: `activation ${n}`, src: 'activation', n });

    const first = await connect(a, 'roamer', token);
    assert.equal((await first.next('welcome')).desired, null);
    await adminApi(a, 'POST', '/rollouts', { agents: { roamer: storePath } });
    const { desired } = await first.next('desired');
    assert.ok(desired);
    const id = desired.id;
    first.send({ type: 'progress', deploymentId: id, step: 'activate' });
    first.send({
      type: 'log',
      deploymentId: id,
      lines: [0, 1, 2, 3, 4].map(act).concat([{ t, text: 'agent 1 line 0', src: 'agent-1', n: 0 }]),
    });
    await waitForLines(id, 6);
    first.ws.terminate();

    // To B, mid-deployment: the activation's output again from line 3, the agent's unconfirmed line again.
    const second = await connect(b, 'roamer', token);
    assert.equal((await second.next('welcome')).desired?.id, id);
    second.send({
      type: 'log',
      deploymentId: id,
      lines: [3, 4, 5, 6, 7].map(act).concat([
        { t, text: 'agent 1 line 0', src: 'agent-1', n: 0 },
        { t, text: 'agent 2 line 0', src: 'agent-2', n: 0 },
      ]),
    });
    await waitForLines(id, 10);
    second.ws.terminate();

    // Back to A, which last wrote this deployment before B did.
    const third = await connect(a, 'roamer', token);
    await third.next('welcome');
    third.send({
      type: 'log',
      deploymentId: id,
      lines: [6, 7, 8, 9].map(act).concat([
        { t, text: 'agent 2 line 0', src: 'agent-2', n: 0 },
        { t, text: 'old agent' },
      ]),
    });
    third.send({
      type: 'result',
      result: { deploymentId: id, state: 'succeeded', step: null, reason: null, rebootRequired: false },
      observed: observedState('roamer', { storePath, generation: 1, kind: 'plain' }),
    });
    await third.next('desired');
    third.ws.close();

    const expected = [
      ...[0, 1, 2, 3, 4].map((n) => `activation ${n}`),
      'agent 1 line 0',
      ...[5, 6, 7].map((n) => `activation ${n}`),
      'agent 2 line 0',
      'activation 8',
      'activation 9',
      'old agent',
    ];
    for (const server of [a, b]) {
      const lines = await logsOf(server, id);
      assert.deepEqual(
        lines.map((l) => l.text),
        expected,
      );
      assert.deepEqual(
        lines.map((l) => l.seq),
        expected.map((_, i) => i + 1),
      );
    }
  });

  it('a newer connection on B closes the older one on A, whose late close leaves the agent online', async () => {
    const { token } = (await adminApi(a, 'POST', '/agents', { name: 'twin' })) as { token: string };
    const online = async (server: TestServer) =>
      ((await adminApi(server, 'GET', '/agents/twin')) as { online: boolean }).online;
    /** Polls until the agent's online flag, read through `server`, is `want`. */
    const waitOnline = async (server: TestServer, want: boolean) => {
      const deadline = Date.now() + 10_000;
      while ((await online(server)) !== want) {
        assert.ok(Date.now() < deadline, `the agent stayed ${want ? 'offline' : 'online'}`);
        await new Promise((r) => setTimeout(r, 50));
      }
    };

    const onA = await connect(a, 'twin', token);
    await onA.next('welcome');
    assert.equal(await online(b), true);

    const onB = await connect(b, 'twin', token);
    await onB.next('welcome');
    const [code, reason] = await within(onA.closed, 'the connection on A to be closed');
    assert.equal(code, CLOSE_CODES.replaced);
    assert.match(String(reason), /replaced by a newer connection/);
    // A saw its connection close after B recorded the agent online: A must not undo that.
    await new Promise((r) => setTimeout(r, 500));
    assert.equal(await online(a), true);
    assert.equal(onB.ws.readyState, WebSocket.OPEN);

    // And back: the connection on B is replaced by one on A, and the agent stays online.
    const again = await connect(a, 'twin', token);
    await again.next('welcome');
    assert.equal((await within(onB.closed, 'the connection on B to be closed'))[0], CLOSE_CODES.replaced);
    await new Promise((r) => setTimeout(r, 500));
    assert.equal(await online(b), true);

    // The newest connection closing does mark the agent offline.
    again.ws.close();
    await waitOnline(b, false);
  });
});
