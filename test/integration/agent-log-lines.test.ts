import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { helloAgentSocket, observedState } from '../helpers/agent-hello.ts';
import { narinfoText, rawRequest, syntheticPath } from '../helpers/binary-cache.ts';
import { adminApi, startTestServer, type TestServer } from '../helpers/server.ts';

/**
 * Log lines sent twice are kept once: an agent re-sends the lines the server had not confirmed
 * after a dropped connection, and a restarted agent re-reads its activation's output from the
 * start. Lines carry their source and number, and the server drops a number it already had.
 * Spoken over a real agent socket, as a second connection of the same agent would.
 */
describe('agent log lines sent twice', () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer();
  });
  after(() => server?.stop());

  const api = (method: string, path: string, body?: unknown) => adminApi(server, method, path, body);

  /** An agent connection that has said hello; `next(type)` waits for a message of that type. */
  const connect = (name: string, token: string) => helloAgentSocket(server.url, name, token);

  it('keeps each numbered line once across connections, and unnumbered lines as sent', async () => {
    await api('POST', '/caches', { name: 'main' });
    const p = syntheticPath('log-twice', `log twice ${Date.now()}`);
    const push = { Authorization: `Bearer ${server.adminToken}` };
    assert.equal(
      (
        await rawRequest(`${server.url}/cache/main/nar/${p.narFile}`, {
          method: 'PUT',
          headers: push,
          body: p.nar,
        })
      ).status,
      201,
    );
    assert.equal(
      (
        await rawRequest(`${server.url}/cache/main/${p.hashPart}.narinfo`, {
          method: 'PUT',
          headers: push,
          body: narinfoText(p.fields),
        })
      ).status,
      201,
    );
    const { token } = (await api('POST', '/agents', { name: 'twice' })) as { token: string };

    const first = await connect('twice', token);
    assert.equal((await first.next('welcome')).desired, null);
    await api('POST', '/rollouts', { agents: { twice: p.storePath } });
    const { desired } = await first.next('desired');
    assert.ok(desired);
    const id = desired.id;
    const t = Date.now();
    first.send({ type: 'progress', deploymentId: id, step: 'activate' });
    first.send({
      type: 'log',
      deploymentId: id,
      lines: [
        { t, text: '$ bin/activate', src: 'activation', n: 0 },
        { t, text: 'starting', src: 'activation', n: 15 },
        { t, text: 'agent line', src: 'agent-1', n: 0 },
      ],
    });
    // The agent dies and comes back: a new connection, its activation's output sent again from
    // the start, its own unconfirmed line again, and an unnumbered line twice.
    first.ws.terminate();
    const second = await connect('twice', token);
    await second.next('welcome');
    second.send({
      type: 'log',
      deploymentId: id,
      lines: [
        { t, text: '$ bin/activate', src: 'activation', n: 0 },
        { t, text: 'starting', src: 'activation', n: 15 },
        { t, text: 'survived', src: 'activation', n: 24 },
        { t, text: 'agent line', src: 'agent-1', n: 0 },
        { t, text: 're-attached', src: 'agent-2', n: 0 },
        { t, text: 'old agent' },
        { t, text: 'old agent' },
      ],
    });
    second.send({
      type: 'result',
      result: { deploymentId: id, state: 'succeeded', step: null, reason: null, rebootRequired: false },
      observed: observedState('twice', { storePath: p.storePath, generation: 1, kind: 'plain' }),
    });
    await second.next('desired');
    second.ws.close();
    const logs = (await api('GET', `/deployments/${id}/logs`)) as {
      lines: Array<{ seq: number; text: string }>;
    };
    assert.deepEqual(
      logs.lines.map((l) => l.text),
      ['$ bin/activate', 'starting', 'agent line', 'survived', 're-attached', 'old agent', 'old agent'],
    );
    // Numbered from 1 without gaps: dropped lines take no number.
    assert.deepEqual(
      logs.lines.map((l) => l.seq),
      [1, 2, 3, 4, 5, 6, 7],
    );
  });
});
