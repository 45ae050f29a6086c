import { execFile } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { type AgentProcess, startAgent } from './agent-process.ts';
import { type DeployWorld, deployWorld } from './deploy-fixtures.ts';
import { RUN_TAG } from './nix.ts';
import { cli, startTestServer, type TestServer } from './server.ts';

const execFileAsync = promisify(execFile);

/** Runs a command (`ip`, `tc`) and returns its stdout; throws with its stderr. */
async function command(cmd: string, args: readonly string[]): Promise<string> {
  try {
    const { stdout } = await execFileAsync(cmd, [...args], { encoding: 'utf8' });
    return stdout;
  } catch (err) {
    const e = err as Error & { stderr?: string };
    throw new Error(`${cmd} ${args.join(' ')}: ${(e.stderr ?? e.message).trim()}`);
  }
}

/**
 * A network namespace joined to the host by a veth pair on a /30 of 10.231.X.0/24: the host side
 * has the first address, the namespace side the second. Only what this helper creates is touched.
 */
export interface Netns {
  readonly name: string;
  /** The host side of the veth pair (stays up: tests cut the link from the namespace side). */
  readonly hostIf: string;
  /** The namespace side of the veth pair. */
  readonly nsIf: string;
  readonly hostIp: string;
  readonly nsIp: string;
  /** A command prefix that runs a program inside the namespace (it execs the program). */
  readonly wrap: readonly string[];
  /** Takes the namespace's link down or brings it back up, from the namespace side. */
  setLink(up: boolean): Promise<void>;
  /** Whether the host side has carrier, that is whether the namespace side is up. */
  carrier(): Promise<boolean>;
  /** Bytes the host has sent into the namespace so far. */
  txBytes(): Promise<number>;
  /** Runs `tc` on the host side, such as `['qdisc', 'add', 'dev', hostIf, 'root', 'netem', ...]`. */
  tc(args: readonly string[]): Promise<void>;
  /** Deletes the namespace and the veth pair; safe to call twice. */
  remove(): Promise<void>;
}

/** The absolute path of `ip`, for activation scripts that run with a bare PATH. */
export async function ipCommand(): Promise<string> {
  return (await command('/bin/sh', ['-c', 'command -v ip'])).trim();
}

/**
 * Why network namespaces cannot be used here (not root, no `ip`, the kernel or a container
 * forbids them), or undefined when they can: creates and deletes one probe namespace.
 */
export async function netnsUnavailable(): Promise<string | undefined> {
  if (process.platform !== 'linux') return `network namespaces are Linux only (this is ${process.platform})`;
  if (process.getuid?.() !== 0) return 'creating network namespaces needs root';
  const probe = `cairn-probe-${RUN_TAG}`;
  try {
    await command('ip', ['netns', 'add', probe]);
  } catch (err) {
    return `cannot create a network namespace: ${(err as Error).message}`;
  }
  await command('ip', ['netns', 'del', probe]).catch(() => {});
  return undefined;
}

let subnet: Promise<number> | undefined;

/** A third octet X such that no host address is in 10.231.X.0/24 yet, picked once per run. */
function pickSubnet(): Promise<number> {
  subnet ??= (async () => {
    const used = await command('ip', ['-4', '-o', 'addr', 'show']);
    const seed = Number.parseInt(RUN_TAG.slice(-6), 16);
    for (let i = 0; i < 250; i++) {
      const x = ((seed + i) % 250) + 1;
      if (!used.includes(`10.231.${x}.`)) return x;
    }
    throw new Error('Cannot pick a subnet: every 10.231.X.0/24 has host addresses');
  })();
  return subnet;
}

/**
 * Creates namespace number `index` (0-63) of this run, with its veth pair and addresses, both
 * sides up and the namespace's loopback up. Names are unique to the run (interface names fit
 * in 15 characters), so parallel runs on one host do not collide.
 */
export async function createNetns(index: number): Promise<Netns> {
  if (!Number.isInteger(index) || index < 0 || index > 63)
    throw new Error(`Cannot create a test namespace: index ${index} is not in 0-63`);
  const x = await pickSubnet();
  const tag = RUN_TAG.slice(-6);
  const name = `cairn-${RUN_TAG}-${index}`;
  const hostIf = `cn${tag}${index}h`;
  const nsIf = `cn${tag}${index}n`;
  const hostIp = `10.231.${x}.${index * 4 + 1}`;
  const nsIp = `10.231.${x}.${index * 4 + 2}`;
  let removed: Promise<void> | undefined;
  const remove = () => {
    removed ??= (async () => {
      // Deleting the namespace deletes its end of the pair, and with it the host end.
      await command('ip', ['netns', 'del', name]).catch(() => {});
      await command('ip', ['link', 'del', hostIf]).catch(() => {});
    })();
    return removed;
  };
  try {
    await command('ip', ['netns', 'add', name]);
    await command('ip', ['link', 'add', hostIf, 'type', 'veth', 'peer', 'name', nsIf]);
    await command('ip', ['link', 'set', nsIf, 'netns', name]);
    await command('ip', ['addr', 'add', `${hostIp}/30`, 'dev', hostIf]);
    await command('ip', ['link', 'set', hostIf, 'up']);
    await command('ip', ['-n', name, 'addr', 'add', `${nsIp}/30`, 'dev', nsIf]);
    await command('ip', ['-n', name, 'link', 'set', nsIf, 'up']);
    await command('ip', ['-n', name, 'link', 'set', 'lo', 'up']);
  } catch (err) {
    await remove();
    throw err;
  }
  const sys = (file: string) => readFile(`/sys/class/net/${hostIf}/${file}`, 'utf8').then((s) => s.trim());
  return {
    name,
    hostIf,
    nsIf,
    hostIp,
    nsIp,
    wrap: ['ip', 'netns', 'exec', name],
    setLink: async (up) => {
      await command('ip', ['-n', name, 'link', 'set', nsIf, up ? 'up' : 'down']);
    },
    carrier: async () => (await sys('carrier').catch(() => '0')) === '1',
    txBytes: async () => Number(await sys('statistics/tx_bytes')),
    tc: async (args) => {
      await command('tc', args);
    },
    remove,
  };
}

/** Changes of a link's state over time, polled every `intervalMs`. */
export interface LinkWatch {
  /** Each change seen, with the time (Date.now()) it was seen. */
  readonly changes: Array<{ t: number; up: boolean }>;
  stop(): void;
}

/** Watches the host side's carrier, so a test can tell when something inside the namespace cut it. */
export function watchLink(ns: Netns, intervalMs = 50): LinkWatch {
  const changes: Array<{ t: number; up: boolean }> = [];
  let last: boolean | undefined;
  let stopped = false;
  const tick = async () => {
    while (!stopped) {
      const up = await ns.carrier();
      if (up !== last) {
        changes.push({ t: Date.now(), up });
        last = up;
      }
      await new Promise((r) => setTimeout(r, intervalMs));
    }
  };
  void tick();
  return {
    changes,
    stop: () => {
      stopped = true;
    },
  };
}

/** A deployment as `GET .../deployments` lists it, as far as the namespace tests look. */
export interface DeploymentRow {
  readonly id: number;
  readonly state: string;
  readonly step: string | null;
  readonly reason: string | null;
  readonly finishedAt: string | null;
}

/** A namespace, a server listening on its host side, a deploy world on it, and agents inside. */
export interface NetWorld {
  readonly ns: Netns;
  readonly server: TestServer;
  readonly world: DeployWorld;
  /** Creates agent `name` and starts it inside the namespace. */
  agent(name: string): Promise<AgentProcess>;
  /** `cairn deploy activate` of `body` as a deploy.json, with extra arguments. */
  activate(body: object, args?: readonly string[]): Promise<{ code: number; stdout: string; stderr: string }>;
  /** The agent's deployments, newest first. */
  deployments(agent: string): Promise<DeploymentRow[]>;
}

/**
 * Starts namespace `index`, a server on its host side and a deploy world on it. Every step that
 * needs undoing is pushed on `undo` as it is taken (undo them last first: agents, the server,
 * the namespace), so a failure half-way still leaves nothing behind.
 */
export async function startNetWorld(index: number, undo: Array<() => Promise<unknown>>): Promise<NetWorld> {
  const ns = await createNetns(index);
  undo.push(() => ns.remove());
  const server = await startTestServer({ listen: `${ns.hostIp}:0` });
  undo.push(() => server.stop());
  const world = await deployWorld(server);
  return {
    ns,
    server,
    world,
    agent: async (name) => {
      const token = await world.createAgent(name);
      const a = await startAgent({
        name,
        token,
        profile: join(world.profiles, name),
        server: server.url,
        wrap: ns.wrap,
      });
      undo.push(() => a.stop());
      return a;
    },
    activate: async (body, args = []) => {
      const file = join(world.profiles, `deploy-${Math.random().toString(36).slice(2)}.json`);
      await writeFile(file, JSON.stringify(body));
      return await cli(['deploy', 'activate', file, ...args], world.env);
    },
    deployments: async (agent) => {
      const res = await fetch(
        `${server.url}/api/v1/workspaces/default/deployments?agent=${encodeURIComponent(agent)}`,
        { headers: { Authorization: `Bearer ${server.adminToken}` } },
      );
      return ((await res.json()) as { deployments: DeploymentRow[] }).deployments;
    },
  };
}

/** Undoes the steps `startNetWorld` recorded, of every world at once, each world last step first. */
export async function stopNetWorlds(undos: ReadonlyArray<Array<() => Promise<unknown>>>): Promise<void> {
  await Promise.all(
    undos.map(async (undo) => {
      for (const step of [...undo].reverse()) await step().catch(() => {});
    }),
  );
}
