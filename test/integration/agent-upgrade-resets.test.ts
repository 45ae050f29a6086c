import assert from 'node:assert/strict';
import { once } from 'node:events';
import { connect, type Socket } from 'node:net';
import { describe, it } from 'node:test';
import { WebSocket } from 'ws';
import { AGENT_WS_PATH, serverMessageSchema } from '../../src/protocol/agent-protocol.ts';
import { helloMessage } from '../helpers/agent-hello.ts';
import { adminApi, startTestServer, type TestServer } from '../helpers/server.ts';

/**
 * Agents whose connection breaks before the WebSocket handshake completes. Node takes its error
 * listener off a socket before 'upgrade' and ws adds its own only once its handshake starts: a
 * reset in between must not end the server.
 */
describe('agent upgrades cut short', () => {
  it('leave the server running when the agent resets before its refusal is written', async () => {
    const server = await startTestServer();
    try {
      // A well-formed token the server does not know: it is refused with 401 after a lookup,
      // by which time the agent has reset the connection.
      const unknown = `cairn_${'a'.repeat(43)}`;
      await Promise.all(
        Array.from({ length: 40 }, async () => {
          const socket = await rawUpgrade(server, 'nobody', unknown);
          socket.resetAndDestroy();
        }),
      );
      await new Promise((resolve) => setTimeout(resolve, 500));
      assert.equal((await fetch(`${server.url}/healthz`)).status, 200);
    } finally {
      await server.stop();
    }
  });

  it('give their connect turn back, so that later agents still get in', async () => {
    const server = await startTestServer({ agentConnectLimits: { concurrent: 2, waiting: 16 } });
    try {
      const { token } = (await adminApi(server, 'POST', '/agents', { name: 'later' })) as {
        token: string;
      };
      // Twice as many handshakes as there are turns, each with a key ws refuses (400): ws ends
      // such a socket without calling back, so only the socket's end can give the turn back.
      await Promise.all(
        Array.from({ length: 4 }, async () => {
          const socket = await rawUpgrade(server, 'later', token, 'not a key');
          socket.resume();
          // Those past the first two wait for a turn: lost turns keep them waiting.
          await once(socket, 'close', { signal: AbortSignal.timeout(10_000) });
        }),
      );
      const ws = new WebSocket(`${server.url.replace(/^http/, 'ws')}${AGENT_WS_PATH}?agent=later`, {
        headers: { Authorization: `Bearer ${token}` },
      });
      ws.on('error', () => {});
      try {
        const welcomed = new Promise<boolean>((resolve) => {
          const timer = setTimeout(() => resolve(false), 10_000);
          ws.on('message', (data: Buffer) => {
            if (serverMessageSchema.parse(JSON.parse(data.toString('utf8'))).type === 'welcome') {
              clearTimeout(timer);
              resolve(true);
            }
          });
        });
        await once(ws, 'open');
        ws.send(JSON.stringify(helloMessage('later')));
        assert.equal(
          await welcomed,
          true,
          'the agent was not welcomed within 10 s: the connect turns were lost',
        );
      } finally {
        ws.close();
      }
    } finally {
      await server.stop();
    }
  });
});

/** Opens a TCP connection and sends an agent upgrade request on it, without waiting for an answer. */
async function rawUpgrade(
  server: TestServer,
  name: string,
  token: string,
  key = 'dGhlIHNhbXBsZSBub25jZQ==',
): Promise<Socket> {
  const { hostname, port } = new URL(server.url);
  const socket = connect({ host: hostname, port: Number(port) });
  socket.on('error', () => {});
  await once(socket, 'connect');
  socket.write(
    `GET ${AGENT_WS_PATH}?agent=${name} HTTP/1.1\r\nHost: ${hostname}:${port}\r\n` +
      `Authorization: Bearer ${token}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n` +
      `Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: ${key}\r\n\r\n`,
  );
  return socket;
}
