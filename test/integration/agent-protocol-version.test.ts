import assert from 'node:assert/strict';
import { once } from 'node:events';
import { after, before, describe, it } from 'node:test';
import { WebSocket } from 'ws';
import {
  AGENT_PROTOCOL_VERSION,
  AGENT_WS_PATH,
  MIN_AGENT_PROTOCOL_VERSION,
  type ServerMessage,
  serverMessageSchema,
} from '../../src/protocol/agent-protocol.ts';
import { agentInfoSchema } from '../../src/protocol/api-schemas.ts';
import { helloMessage } from '../helpers/agent-hello.ts';
import { startTestServer, type TestServer } from '../helpers/server.ts';

/** The close code docs/api.md lists for "protocol version too old" (among other invalid messages). */
const DOCUMENTED_CLOSE_CODE = 4400;

/**
 * The server's minimum agent protocol version (docs/api.md, docs/install.md "Upgrading"): an
 * agent older than it is refused with an error message saying so and a close with 4400, and is
 * never welcomed nor recorded.
 */
describe('agent protocol version check', () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer();
  });
  after(async () => {
    await server.stop();
  });

  /** Opens an agent connection, says hello with `protocol`, and collects what happens. */
  const helloWith = async (name: string, protocol: number) => {
    const created = await fetch(`${server.url}/api/v1/workspaces/default/agents`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${server.adminToken}`, 'Content-Type': 'application/json' },
      body: JSON.stringify({ name }),
    });
    assert.equal(created.status, 201);
    const { token } = (await created.json()) as { token: string };
    const ws = new WebSocket(`${server.url.replace(/^http/, 'ws')}${AGENT_WS_PATH}?agent=${name}`, {
      headers: { Authorization: `Bearer ${token}` },
    });
    const messages: ServerMessage[] = [];
    ws.on('message', (data) => messages.push(serverMessageSchema.parse(JSON.parse(String(data)))));
    await once(ws, 'open');
    const closed = once(ws, 'close') as Promise<[number, Buffer]>;
    ws.send(JSON.stringify({ ...helloMessage(name), protocol }));
    return { ws, messages, closed };
  };

  const agentInfo = async (name: string) => {
    const res = await fetch(`${server.url}/api/v1/workspaces/default/agents/${name}`, {
      headers: { Authorization: `Bearer ${server.adminToken}` },
    });
    assert.equal(res.status, 200);
    return agentInfoSchema.parse(await res.json());
  };

  it('welcomes an agent speaking the current version and records its machine (the control case)', async () => {
    const { ws, messages } = await helloWith('current', AGENT_PROTOCOL_VERSION);
    while (messages.length === 0) await new Promise((r) => setTimeout(r, 10));
    assert.equal(messages[0]?.type, 'welcome');
    assert.equal((await agentInfo('current')).hostname, 'current');
    ws.close();
  });

  it('refuses a hello older than MIN_AGENT_PROTOCOL_VERSION with an error and a close with 4400', async () => {
    const { messages, closed } = await helloWith('ancient', MIN_AGENT_PROTOCOL_VERSION - 1);
    const [code] = await closed;
    assert.equal(code, DOCUMENTED_CLOSE_CODE);
    assert.deepEqual(
      messages.map((m) => [m.type, m.type === 'error' ? m.code : undefined]),
      [['error', 'BAD_REQUEST']],
    );
    // Never welcomed, so what it said of its machine is not recorded.
    const info = await agentInfo('ancient');
    assert.equal(info.hostname, null);
    assert.equal(info.online, false);
  });

  it('tells an agent older than MIN_AGENT_PROTOCOL_VERSION that its protocol is too old', async () => {
    const old = MIN_AGENT_PROTOCOL_VERSION - 1;
    const { messages, closed } = await helloWith('ancient2', old);
    const [code, reason] = await closed;
    assert.equal(code, DOCUMENTED_CLOSE_CODE);
    assert.equal(reason.toString(), 'protocol too old');
    const [error] = messages;
    assert.match(
      error?.type === 'error' ? error.message : '',
      new RegExp(`protocol ${old} is older than ${MIN_AGENT_PROTOCOL_VERSION}; upgrade the agent`),
    );
  });
});
