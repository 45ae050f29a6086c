import { join } from 'node:path';
import { after, before } from 'node:test';
import { type AgentProcess, startAgent } from './agent-process.ts';
import { type DeployWorld, deployWorld, writeDeployJson } from './deploy-fixtures.ts';
import { cli, startTestServer, type TestServer } from './server.ts';

/** A server with a {@link DeployWorld}, and the agents a test file starts on it. */
export interface DeployTestbed {
  /** The server; there once the testbed's `before` hook has run. */
  readonly server: TestServer;
  /** Its deploy world; there once the testbed's `before` hook has run. */
  readonly world: DeployWorld;
  /**
   * Starts agent `name` on the profile `<world.profiles>/<name>` and waits until it is connected;
   * it is stopped after the tests. Without `token`, the agent is created on the server first.
   */
  agent(
    name: string,
    options?: {
      token?: string;
      stateDir?: string;
      wrap?: readonly string[];
      env?: Record<string, string>;
    },
  ): Promise<AgentProcess>;
  /** Runs `cairn deploy activate` on a deploy.json with `body`, as the admin. */
  activate(body: object): ReturnType<typeof cli>;
}

/**
 * Registers `before` and `after` hooks in the current `describe` block that start a server with a
 * deploy world, and stop it and every agent {@link DeployTestbed.agent} started, afterwards.
 */
export function useDeployTestbed(serverOptions: Parameters<typeof startTestServer>[0] = {}): DeployTestbed {
  let started: { server: TestServer; world: DeployWorld } | undefined;
  const agents: AgentProcess[] = [];
  const ready = () => {
    if (!started) throw new Error('the deploy testbed is used before its before hook ran');
    return started;
  };
  before(async () => {
    const server = await startTestServer(serverOptions);
    started = { server, world: await deployWorld(server) };
  });
  after(async () => {
    await Promise.all(agents.map((a) => a.stop()));
    await started?.server.stop();
  });
  return {
    get server() {
      return ready().server;
    },
    get world() {
      return ready().world;
    },
    agent: async (name, options = {}) => {
      const { server, world } = ready();
      const a = await startAgent({
        name,
        token: options.token ?? (await world.createAgent(name)),
        profile: join(world.profiles, name),
        server: server.url,
        ...(options.stateDir === undefined ? {} : { stateDir: options.stateDir }),
        ...(options.wrap === undefined ? {} : { wrap: options.wrap }),
        ...(options.env === undefined ? {} : { env: options.env }),
      });
      agents.push(a);
      await a.waitFor(/connected to/);
      return a;
    },
    activate: async (body) => {
      const { world } = ready();
      return cli(['deploy', 'activate', await writeDeployJson(world.profiles, body)], world.env);
    },
  };
}
