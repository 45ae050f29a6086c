import { once } from 'node:events';
import { WebSocket } from 'ws';
import {
  AGENT_PROTOCOL_VERSION,
  AGENT_WS_PATH,
  type Observed,
  type ServerMessage,
  serverMessageSchema,
} from '../../src/protocol/agent-protocol.ts';

/** What a test agent reports of its machine: nothing deployed yet unless `overrides` says so. */
export function observedState(hostname: string, overrides: Partial<Observed> = {}): Observed {
  return {
    storePath: null,
    generation: null,
    kind: null,
    system: 'x86_64-linux',
    hostname,
    agentVersion: 'test',
    nixVersion: 'nix (Nix) 2.8.0',
    profile: '/nix/var/nix/profiles/system',
    ...overrides,
  };
}

/** The hello a test agent opens its connection with (the current protocol unless `protocol` says). */
export function helloMessage(hostname: string, protocol: number = AGENT_PROTOCOL_VERSION) {
  return {
    type: 'hello',
    protocol,
    observed: observedState(hostname),
    running: null,
    unreported: [],
  } as const;
}

/**
 * An agent's WebSocket to `serverUrl` that has said hello as `name` with `token` (and protocol
 * `options.protocol`, the current one by default). `next(type, ok)` waits for (and takes) the
 * first message of that type that `ok` accepts, in arrival order. It answers nothing by itself.
 */
export async function helloAgentSocket(
  serverUrl: string,
  name: string,
  token: string,
  options: { protocol?: number } = {},
) {
  const ws = new WebSocket(`${serverUrl.replace(/^http/, 'ws')}${AGENT_WS_PATH}?agent=${name}`, {
    headers: { Authorization: `Bearer ${token}` },
  });
  const inbox: ServerMessage[] = [];
  const waiters: Array<() => void> = [];
  ws.on('message', (data) => {
    inbox.push(serverMessageSchema.parse(JSON.parse(String(data))));
    for (const w of waiters.splice(0)) w();
  });
  /** The close code and reason, once the socket closes. */
  const closed = once(ws, 'close') as Promise<[number, Buffer]>;
  await once(ws, 'open');
  ws.send(JSON.stringify(helloMessage(name, options.protocol)));
  const next = async <T extends ServerMessage['type']>(
    type: T,
    ok: (m: Extract<ServerMessage, { type: T }>) => boolean = () => true,
  ): Promise<Extract<ServerMessage, { type: T }>> => {
    for (;;) {
      const i = inbox.findIndex((m) => m.type === type && ok(m as Extract<ServerMessage, { type: T }>));
      if (i >= 0) return inbox.splice(i, 1)[0] as Extract<ServerMessage, { type: T }>;
      await new Promise<void>((resolve) => waiters.push(resolve));
    }
  };
  return { ws, next, closed, send: (msg: unknown) => ws.send(JSON.stringify(msg)) };
}
