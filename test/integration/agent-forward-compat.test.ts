import assert from 'node:assert/strict';
import { once } from 'node:events';
import { mkdtemp, readlink, rm } from 'node:fs/promises';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { WebSocketServer } from 'ws';
import { AGENT_WS_PATH, type AgentMessage, agentMessageSchema } from '../../src/protocol/agent-protocol.ts';
import { startAgent } from '../helpers/agent-process.ts';
import { plainPackage } from '../helpers/deploy-fixtures.ts';
import { buildPackages, RUN_TAG } from '../helpers/nix.ts';

/**
 * The protocol's promise that a newer server works with the current agent: a server that adds
 * fields to its messages (here at every level: welcome, the desired deployment, a health check,
 * confirmed) is understood, and the agent runs the deployment it is sent, through confirmation
 * over a new connection, to a reported success. A message of a type the agent does not know is
 * still dropped with a log line. The server is a small real one speaking the protocol on port 0;
 * the agent is the real `cairn deploy agent` process with the real Nix.
 */
describe('a server newer than the agent', () => {
  const cleanup: Array<() => Promise<unknown>> = [];
  after(async () => {
    for (const c of cleanup.reverse()) await c().catch(() => {});
  });

  it('sends messages with unknown fields, and the agent acts on them', async () => {
    const name = `compat-${RUN_TAG}`;
    const storePath = (await buildPackages([plainPackage(name)])).get(name)!;
    const dir = await mkdtemp(join(tmpdir(), 'cairn-compat-'));
    cleanup.push(() => rm(dir, { recursive: true, force: true }));

    const desired = {
      id: 'd-compat',
      storePath,
      rollbackScript: null,
      exit4: 'fail',
      healthChecks: [
        {
          command: ['bin/activate'],
          timeoutSeconds: 30,
          retries: 0,
          intervalSeconds: 0,
          graceSeconds: 0,
          workingDirectory: '/', // a health check option from the future
        },
      ],
      confirmTimeoutSeconds: 30,
      rollback: false,
      batch: { index: 2, of: 5 }, // a staged rollout's field from the future
    };
    const received: AgentMessage[] = [];
    let connections = 0;
    const http = createServer();
    const wss = new WebSocketServer({ noServer: true });
    http.on('upgrade', (req, socket, head) => {
      assert.equal(new URL(req.url ?? '', 'http://x').pathname, AGENT_WS_PATH);
      wss.handleUpgrade(req, socket, head, (ws) => {
        connections++;
        const send = (msg: Record<string, unknown>) => ws.send(JSON.stringify(msg));
        ws.on('message', (data) => {
          const msg = agentMessageSchema.parse(JSON.parse(String(data)));
          received.push(msg);
          if (msg.type === 'hello') {
            send({ type: 'future-message', anything: true });
            send({
              type: 'welcome',
              protocol: 1,
              agent: name,
              caches: [],
              desired,
              replica: 'server-2', // from the future
            });
          } else if (msg.type === 'confirm') {
            send({ type: 'confirmed', deploymentId: msg.deploymentId, confirmedAt: Date.now() });
          }
        });
      });
    });
    http.listen(0, '127.0.0.1');
    await once(http, 'listening');
    cleanup.push(async () => {
      for (const ws of wss.clients) ws.terminate();
      http.close();
    });
    const { port } = http.address() as AddressInfo;

    const profile = join(dir, 'profile');
    const agent = await startAgent({ name, profile, server: `http://127.0.0.1:${port}`, token: 'compat' });
    cleanup.push(() => agent.stop());

    await agent.waitFor(new RegExp(`connected to http://127.0.0.1:${port} as ${name}`));
    await agent.waitFor(/deployment d-compat: succeeded/, 60_000);
    // Unknown message types are dropped as before, with a line saying so.
    await agent.waitFor(/ignoring an invalid message from the server/);
    // It confirmed over a second connection, was told `confirmed`, and reported the success.
    assert.ok(connections >= 2, `${connections} connections`);
    const deadline = Date.now() + 10_000;
    let result: Extract<AgentMessage, { type: 'result' }> | undefined;
    while (!result) {
      assert.ok(Date.now() < deadline, `no result:\n${agent.lines.join('\n')}`);
      result = received.find((m) => m.type === 'result');
      if (!result) await new Promise((r) => setTimeout(r, 50));
    }
    assert.equal(result.result.state, 'succeeded', JSON.stringify(result));
    assert.ok(received.some((m) => m.type === 'confirm' && m.deploymentId === 'd-compat'));
    assert.equal(await readlink(join(dir, await readlink(profile))), storePath);
    // The health check with a field from the future ran: its command's output is in the log.
    const logged = received.flatMap((m) => (m.type === 'log' ? m.lines.map((l) => l.text) : []));
    assert.ok(
      logged.filter((l) => l === `activated ${name}`).length >= 2,
      `activation and health check output expected:\n${logged.join('\n')}`,
    );
  });
});
