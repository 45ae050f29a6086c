import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { sql } from 'kysely';
import { LOG_CAP_MARKER, MAX_LOG_CHARS, MAX_LOG_SOURCES } from '../../src/server/agents/log-writer.ts';
import { helloAgentSocket, observedState } from '../helpers/agent-hello.ts';
import { narinfoText, rawRequest, syntheticPath } from '../helpers/binary-cache.ts';
import { adminApi, startTestServer, type TestServer } from '../helpers/server.ts';
import { until } from '../helpers/staged-rollout.ts';

/**
 * Issue #23, finding 5: one agent could flood the log table (60 MB in 4 s), write lines for
 * finished deployments (never deleted by retention) and grow the de-duplication set without
 * bound. A real server and an agent speaking over a real WebSocket.
 */
describe('log floods from one agent', () => {
  let server: TestServer;
  const api = (method: string, path: string, body?: unknown) => adminApi(server, method, path, body);
  before(async () => {
    server = await startTestServer();
    await api('POST', '/caches', { name: 'main' });
  });
  after(() => server?.stop());

  /** An agent `name` with a deployment in flight: its socket and the deployment's id. */
  async function agentWithDeployment(name: string) {
    const p = syntheticPath(`flood-${name}`, `flood ${name} ${Date.now()}`);
    const push = { Authorization: `Bearer ${server.adminToken}` };
    for (const [path, body] of [
      [`nar/${p.narFile}`, p.nar],
      [`${p.hashPart}.narinfo`, narinfoText(p.fields)],
    ] as const) {
      assert.equal(
        (await rawRequest(`${server.url}/cache/main/${path}`, { method: 'PUT', headers: push, body })).status,
        201,
      );
    }
    const { token } = (await api('POST', '/agents', { name })) as { token: string };
    const { ws, next, send } = await helloAgentSocket(server.url, name, token);
    await next('welcome');
    await api('POST', '/rollouts', { agents: { [name]: p.storePath } });
    const { desired } = await next('desired', (m) => m.desired !== null);
    const id = desired!.id;
    send({ type: 'progress', deploymentId: id, step: 'activate' });
    /** Gives the server time to handle (and write, in its 50 ms batches) what was sent. */
    const settle = async () => {
      send({ type: 'observed', observed: observedState(name) });
      await new Promise((r) => setTimeout(r, 300));
    };
    return { ws, id, send, settle, storePath: p.storePath, next };
  }

  const stored = async (id: string) => {
    const rows = await server.query<{ n: number | string; chars: number | string | null }>(
      sql`select count(*) as n, sum(length(text)) as chars from deployment_logs where deployment_id = ${Number(id)}`,
    );
    return { lines: Number(rows[0]!.n), chars: Number(rows[0]!.chars ?? 0) };
  };
  const lastLine = async (id: string) =>
    ((await api('GET', `/deployments/${id}/logs`)) as { lines: Array<{ text: string }> }).lines.at(-1)?.text;

  it('stops a flood at the cap of characters per deployment, with one marker line', async () => {
    const a = await agentWithDeployment('flooder');
    const line = 'x'.repeat(16_000);
    // 40 messages of 60 lines of 16,000 characters: 38 MB, past the 16 MiB cap.
    for (let m = 0; m < 40; m++) {
      a.send({
        type: 'log',
        deploymentId: a.id,
        lines: Array.from({ length: 60 }, () => ({ t: Date.now(), text: line })),
      });
    }
    await until('the marker line', async () =>
      (await lastLine(a.id)) === LOG_CAP_MARKER ? true : undefined,
    );
    await a.settle();
    const after = await stored(a.id);
    assert.ok(after.chars <= MAX_LOG_CHARS + LOG_CAP_MARKER.length, `${after.chars} characters stored`);
    assert.ok(after.chars > MAX_LOG_CHARS - 2 * 16_384, `only ${after.chars} characters stored`);
    assert.equal(await lastLine(a.id), LOG_CAP_MARKER);
    // More lines change nothing: the marker stays last, once.
    a.send({ type: 'log', deploymentId: a.id, lines: [{ t: Date.now(), text: 'one more' }] });
    await a.settle();
    assert.deepEqual(await stored(a.id), after);
    a.ws.close();
  });

  it('refuses lines for a finished deployment', async () => {
    const a = await agentWithDeployment('finisher');
    a.send({ type: 'log', deploymentId: a.id, lines: [{ t: Date.now(), text: 'while running' }] });
    a.send({
      type: 'result',
      result: { deploymentId: a.id, state: 'succeeded', step: null, reason: null, rebootRequired: false },
      observed: observedState('finisher', { storePath: a.storePath, generation: 1, kind: 'plain' }),
    });
    await a.settle();
    const before = await stored(a.id);
    assert.equal(before.lines, 1);
    for (let m = 0; m < 5; m++) {
      a.send({
        type: 'log',
        deploymentId: a.id,
        lines: Array.from({ length: 1000 }, (_, i) => ({ t: Date.now(), text: `late ${m} ${i}` })),
      });
    }
    await a.settle();
    assert.deepEqual(await stored(a.id), before);
    a.ws.close();
  });

  it('keeps the set of de-duplicated sources bounded, whatever sources the agent invents', async () => {
    const a = await agentWithDeployment('sourcer');
    const lines = Array.from({ length: 1000 }, (_, i) => ({
      t: Date.now(),
      text: `line ${i}`,
      src: `s${i}`,
      n: 0,
    }));
    a.send({ type: 'log', deploymentId: a.id, lines });
    await until('1,000 lines', async () => ((await stored(a.id)).lines === 1000 ? true : undefined));
    const sources = await server.query<{ n: number | string }>(
      sql`select count(*) as n from deployment_log_sources where deployment_id = ${Number(a.id)}`,
    );
    assert.equal(Number(sources[0]!.n), MAX_LOG_SOURCES);
    assert.equal((await stored(a.id)).lines, 1000);
    // Sent again: the tracked sources drop their line, the others are kept as sent.
    a.send({ type: 'log', deploymentId: a.id, lines });
    await until('the lines sent again', async () => ((await stored(a.id)).lines > 1000 ? true : undefined));
    await a.settle();
    assert.equal((await stored(a.id)).lines, 2000 - MAX_LOG_SOURCES);
    a.ws.close();
  });
});
