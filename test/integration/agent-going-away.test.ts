import assert from 'node:assert/strict';
import { once } from 'node:events';
import { describe, it } from 'node:test';
import { WebSocket } from 'ws';
import {
  AGENT_PROTOCOL_VERSION,
  AGENT_WS_PATH,
  CLOSE_CODES,
  type ServerMessage,
  serverMessageSchema,
} from '../../src/protocol/agent-protocol.ts';
import { startTestServer } from '../helpers/server.ts';

/**
 * A server that shuts down tells its agents over how long to come back (`going-away`, then a
 * close with 4503), and turns away an agent that tries to connect while it stops.
 */
describe('agents of a server that shuts down', () => {
  it('are told to come back within a spread, then closed with 4503', async () => {
    const server = await startTestServer();
    try {
      const created = await fetch(`${server.url}/api/v1/workspaces/default/agents`, {
        method: 'POST',
        headers: { Authorization: `Bearer ${server.adminToken}`, 'Content-Type': 'application/json' },
        body: JSON.stringify({ name: 'leaver' }),
      });
      const { token } = (await created.json()) as { token: string };
      const ws = new WebSocket(`${server.url.replace(/^http/, 'ws')}${AGENT_WS_PATH}?agent=leaver`, {
        headers: { Authorization: `Bearer ${token}` },
      });
      const messages: ServerMessage[] = [];
      ws.on('message', (data) => messages.push(serverMessageSchema.parse(JSON.parse(String(data)))));
      await once(ws, 'open');
      ws.send(
        JSON.stringify({
          type: 'hello',
          protocol: AGENT_PROTOCOL_VERSION,
          observed: {
            storePath: null,
            generation: null,
            kind: null,
            system: 'x86_64-linux',
            hostname: 'leaver',
            agentVersion: 'test',
            nixVersion: 'nix (Nix) 2.8.0',
            profile: '/nix/var/nix/profiles/system',
          },
          running: null,
          unreported: [],
        }),
      );
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
