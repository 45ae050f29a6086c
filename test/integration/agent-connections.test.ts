import assert from 'node:assert/strict';
import { once } from 'node:events';
import { describe, it } from 'node:test';
import { WebSocket } from 'ws';
import {
  AGENT_WS_PATH,
  CLOSE_CODES,
  type ServerMessage,
  serverMessageSchema,
} from '../../src/protocol/agent-protocol.ts';
import { helloMessage } from '../helpers/agent-hello.ts';
import { startTestServer, type TestServer } from '../helpers/server.ts';

/**
 * How the server paces agent connections: a server that shuts down tells its agents over how
 * long to come back (`going-away`, then a close with 4503); a server busy setting up
 * connections queues a few more and turns the rest away with 503 and a Retry-After.
 */
const HELLO = helloMessage('test');

async function createAgent(server: TestServer, name: string): Promise<string> {
  const created = await fetch(`${server.url}/api/v1/workspaces/default/agents`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${server.adminToken}`, 'Content-Type': 'application/json' },
    body: JSON.stringify({ name }),
  });
  assert.equal(created.status, 201);
  return ((await created.json()) as { token: string }).token;
}

function open(server: TestServer, name: string, token: string): WebSocket {
  const ws = new WebSocket(`${server.url.replace(/^http/, 'ws')}${AGENT_WS_PATH}?agent=${name}`, {
    headers: { Authorization: `Bearer ${token}` },
  });
  // A refused upgrade, or a socket closed before it opened, is an outcome here, not a crash.
  ws.on('error', () => {});
  return ws;
}

describe('agent connections', () => {
  it('sets up a few at once, queues a few more and turns the rest away with 503 and Retry-After', async () => {
    const server = await startTestServer({ agentConnectLimits: { concurrent: 1, waiting: 1 } });
    try {
      const tokens = await Promise.all(['one', 'two', 'three'].map((n) => createAgent(server, n)));
      // The first holds the only turn until it says hello.
      const first = open(server, 'one', tokens[0]!);
      await once(first, 'open');
      const outcome = (ws: WebSocket) =>
        new Promise<{ opened: true } | { status: number; retryAfter: string | undefined; body: string }>(
          (resolve) => {
            ws.once('open', () => resolve({ opened: true }));
            ws.once('unexpected-response', (_req, res) => {
              let body = '';
              res.on('data', (d: Buffer) => {
                body += d.toString();
              });
              res.on('end', () =>
                resolve({ status: res.statusCode ?? 0, retryAfter: res.headers['retry-after'], body }),
              );
            });
          },
        );
      const second = open(server, 'two', tokens[1]!);
      const secondOutcome = outcome(second);
      await new Promise((r) => setTimeout(r, 300));
      const third = open(server, 'three', tokens[2]!);
      const thirdOutcome = outcome(third);
      // One of the two waits for the turn, the other is turned away at once.
      const refused = await Promise.race([secondOutcome, thirdOutcome]);
      assert.ok(!('opened' in refused), 'a connection opened while the only turn was held');
      assert.equal(refused.status, 503);
      assert.match(refused.retryAfter ?? '', /^([1-9]|10)$/);
      const body = JSON.parse(refused.body) as { code: string; message: string };
      assert.equal(body.code, 'UNAVAILABLE');
      assert.match(body.message, /agents are connecting; retry in \d+s/);
      // The first says hello and is welcomed: its turn passes to the one waiting.
      first.send(JSON.stringify(HELLO));
      const [waiting] = await Promise.all([
        Promise.any([
          secondOutcome.then((o) => ('opened' in o ? o : Promise.reject(new Error('refused')))),
          thirdOutcome.then((o) => ('opened' in o ? o : Promise.reject(new Error('refused')))),
        ]),
      ]);
      assert.deepEqual(waiting, { opened: true });
      for (const ws of [first, second, third]) ws.terminate();
    } finally {
      await server.stop();
    }
  });

  it('are told to come back within a spread, then closed with 4503', async () => {
    const server = await startTestServer();
    try {
      const ws = open(server, 'leaver', await createAgent(server, 'leaver'));
      const messages: ServerMessage[] = [];
      ws.on('message', (data) => messages.push(serverMessageSchema.parse(JSON.parse(String(data)))));
      await once(ws, 'open');
      ws.send(JSON.stringify(HELLO));
      while (!messages.some((m) => m.type === 'welcome')) await new Promise((r) => setTimeout(r, 10));
      const closed = once(ws, 'close');
      const stopping = server.close();
      const [code] = (await closed) as [number, Buffer];
      assert.equal(code, CLOSE_CODES.shuttingDown);
      // One agent: come back within a second (one per 500 agents, at least 1 s).
      assert.deepEqual(messages.at(-1), { type: 'going-away', reconnectWithinSeconds: 1 });
      await stopping;
    } finally {
      await server.stop();
    }
  });
});
