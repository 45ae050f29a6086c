import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { setTimeout as delay } from 'node:timers/promises';
import { AgentSession } from '../../src/agent/agent-session.ts';
import type { ServerMessage } from '../../src/protocol/agent-protocol.ts';
import { observedState } from '../helpers/agent-hello.ts';
import { narinfoText, rawRequest, syntheticPath } from '../helpers/binary-cache.ts';
import { adminApi, startTestServer, type TestServer } from '../helpers/server.ts';

/**
 * The agent's protocol pieces without Nix, as a simulated agent uses them: an AgentSession whose
 * `deploy` only reports steps and lines, against the real server. It goes through the same
 * sequence as the real agent (hello, welcome, progress, logs, confirmation over a new connection,
 * result and its acknowledgement), and the server records the deployment as succeeded.
 */
describe('AgentSession without Nix', () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer();
  });
  after(() => server?.stop());

  const api = (method: string, path: string, body?: unknown) => adminApi(server, method, path, body);

  it('runs a deployment through confirmation to a reported success', async () => {
    await api('POST', '/caches', { name: 'main' });
    const p = syntheticPath('session', `session ${Date.now()}`);
    const push = { Authorization: `Bearer ${server.adminToken}` };
    const nar = await rawRequest(`${server.url}/cache/main/nar/${p.narFile}`, {
      method: 'PUT',
      headers: push,
      body: p.nar,
    });
    assert.equal(nar.status, 201);
    const narinfo = await rawRequest(`${server.url}/cache/main/${p.hashPart}.narinfo`, {
      method: 'PUT',
      headers: push,
      body: narinfoText(p.fields),
    });
    assert.equal(narinfo.status, 201);
    const { token } = (await api('POST', '/agents', { name: 'sim' })) as { token: string };

    let storePath: string | null = null;
    const messages: ServerMessage[] = [];
    let closes = 0;
    let acknowledged: string[] = [];
    const log: string[] = [];
    const session = new AgentSession({
      server: server.url,
      name: 'sim',
      token,
      log: (line) => log.push(line),
      observe: async () => observedState('sim', storePath ? { storePath, generation: 1, kind: 'plain' } : {}),
      onMessage: (msg) => messages.push(msg),
      onClose: () => closes++,
      onAcknowledged: (ids) => {
        acknowledged = [...ids];
      },
      deploy: async (d, ctx) => {
        ctx.step('realise');
        ctx.line(`copying ${d.storePath}`);
        ctx.step('activate');
        storePath = d.storePath;
        ctx.line('activated');
        ctx.step('confirm');
        const confirmed = await ctx.confirm(d.id, d.confirmTimeoutSeconds * 1000);
        ctx.line(confirmed ? 'confirmed' : 'not confirmed');
        return {
          deploymentId: d.id,
          state: confirmed ? 'succeeded' : 'failed',
          step: confirmed ? null : 'confirm',
          reason: confirmed ? null : 'not confirmed',
          rebootRequired: false,
        };
      },
    });
    const stop = new AbortController();
    const running = session.run(stop.signal);
    try {
      while (!messages.some((m) => m.type === 'welcome')) await delay(20);
      const rollout = (await api('POST', '/rollouts', { agents: { sim: p.storePath } })) as {
        deployments: Array<{ id: number }>;
      };
      const id = rollout.deployments[0]!.id;
      const deadline = Date.now() + 20_000;
      while (acknowledged.length === 0) {
        assert.ok(Date.now() < deadline, `no acknowledged result:\n${log.join('\n')}`);
        await delay(50);
      }
      assert.deepEqual(acknowledged, [String(id)]);
      const info = await api('GET', `/deployments/${id}`);
      assert.equal(info.state, 'succeeded', JSON.stringify(info));
      const logs = (await api('GET', `/deployments/${id}/logs`)) as { lines: Array<{ text: string }> };
      assert.deepEqual(
        logs.lines.map((l) => l.text),
        [`copying ${p.storePath}`, 'activated', 'confirmed'],
      );
      // Confirmation dropped the first connection and was confirmed over a second one.
      assert.ok(closes >= 1, `${closes} closes`);
      assert.ok(messages.some((m) => m.type === 'confirmed' && m.deploymentId === String(id)));
      assert.equal(messages.filter((m) => m.type === 'welcome').length, 2, log.join('\n'));
    } finally {
      stop.abort();
      await running;
    }
  });
});
