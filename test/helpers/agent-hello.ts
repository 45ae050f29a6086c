import { AGENT_PROTOCOL_VERSION, type Observed } from '../../src/protocol/agent-protocol.ts';

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

/** The hello a test agent opens its connection with. */
export function helloMessage(hostname: string) {
  return {
    type: 'hello',
    protocol: AGENT_PROTOCOL_VERSION,
    observed: observedState(hostname),
    running: null,
    unreported: [],
  } as const;
}
