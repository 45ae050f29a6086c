import assert from 'node:assert/strict';
import { mkdtemp, readdir, readFile, writeFile } from 'node:fs/promises';
import { connect, createServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { type AgentProcess, startAgent } from '../helpers/agent-process.ts';
import { type DeployWorld, deployWorld, profileTarget } from '../helpers/deploy-fixtures.ts';
import { buildPackages, RUN_TAG, run } from '../helpers/nix.ts';
import { cli, startTestServer, type TestServer } from '../helpers/server.ts';

/**
 * Issue #5, "killed mid-switch", for a kill during the download: the agent is SIGKILLed while
 * `nix-store --realise` fetches a NAR, and the agent restarted on the same state dir finishes the
 * deployment from its journal. The agent reaches the server through a TCP proxy in this process
 * that lets the server's answers through at a set rate (the server gives an agent cache URLs on
 * the address the agent used, so the NAR comes through the proxy too): the download lasts
 * seconds, and the agent is killed once a known number of NAR bytes has passed. No network
 * namespace or root is needed. Its own file, and so its own process.
 */

/** Size of the NAR: random bytes, pushed uncompressed, so the proxy carries every one of them. */
const BLOB_BYTES = 32 * 1024 * 1024;
/** The proxy's rate until the kill: the NAR would take 8 s. */
const SLOW_RATE = 4 * 1024 * 1024;
/** Bytes the proxy must have passed before the kill: well into the NAR, far from its end. */
const KILL_AFTER_BYTES = 4 * 1024 * 1024;
/** The rate that keeps an orphaned nix-store downloading (but moving) until the restart is seen. */
const CRAWL_RATE = 256 * 1024;

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** A TCP proxy to the server that passes the server's answers on at `rate` bytes/s per connection. */
interface SlowProxy {
  readonly url: string;
  /** Bytes passed from the server to clients so far. */
  readonly bytes: number;
  /** Bytes per second per connection from now on, `Infinity` for no limit. */
  rate: number;
  close(): Promise<void>;
}

async function startSlowProxy(target: URL, rate: number): Promise<SlowProxy> {
  const sockets = new Set<Socket>();
  const proxy = { bytes: 0, rate };
  const server = createServer((client) => {
    const upstream = connect(Number(target.port), target.hostname);
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on('error', () => {});
      s.on('close', () => {
        sockets.delete(s);
        client.destroy();
        upstream.destroy();
      });
    }
    client.pipe(upstream);
    upstream.on('data', (chunk: Buffer) => {
      proxy.bytes += chunk.length;
      const flushed = client.write(chunk);
      if (flushed && proxy.rate === Number.POSITIVE_INFINITY) return;
      // Read no more until the chunk has taken its time at the rate and the client has it.
      upstream.pause();
      const drained = flushed ? Promise.resolve() : new Promise((r) => client.once('drain', r));
      void Promise.all([sleep((chunk.length / proxy.rate) * 1000), drained]).then(() => upstream.resume());
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  assert.ok(address && typeof address === 'object');
  return Object.assign(proxy, {
    url: `http://127.0.0.1:${address.port}`,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  });
}

/** The children of a process (of all its threads), from /proc. */
async function childPids(pid: number): Promise<number[]> {
  const tasks = await readdir(`/proc/${pid}/task`).catch(() => [] as string[]);
  const found = new Set<number>();
  for (const t of tasks) {
    const text = await readFile(`/proc/${pid}/task/${t}/children`, 'utf8').catch(() => '');
    for (const p of text.split(/\s+/).filter(Boolean)) found.add(Number(p));
  }
  return [...found];
}

/** The argv of a live process, or undefined once it has exited (a zombie has exited). */
async function liveArgv(pid: number): Promise<string[] | undefined> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => undefined);
  if (stat === undefined) return undefined;
  // "pid (comm) state ...": comm may hold spaces and parentheses; the state follows the last ')'.
  const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
  if (state === 'Z' || state === 'X') return undefined;
  const cmdline = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => undefined);
  return cmdline?.split('\0').filter(Boolean);
}

/** The `nix-store --realise` (not the dry run) a process is running as its child, if any. */
async function realiseChild(pid: number): Promise<number | undefined> {
  for (const child of await childPids(pid)) {
    const argv = await liveArgv(child);
    if (argv?.[0]?.endsWith('nix-store') && argv.includes('--add-root')) return child;
  }
  return undefined;
}

async function waitUntil(what: string, timeoutMs: number, test: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await test())) {
    if (Date.now() > deadline) assert.fail(`${what} within ${timeoutMs / 1000} s`);
    await sleep(20);
  }
}

describe('agent killed during the download', () => {
  let server: TestServer;
  let world: DeployWorld;
  let markers: string;
  let paths: Map<string, string>;
  const agents: AgentProcess[] = [];
  const proxies: SlowProxy[] = [];
  /** The nix-store processes of killed agents: none may outlive this file. */
  const orphans: number[] = [];
  const pkg = (which: string) => `dl-kill-${which}-${RUN_TAG}`;

  before(async () => {
    server = await startTestServer();
    world = await deployWorld(server);
    markers = await mkdtemp(join(tmpdir(), 'cairn-dl-kill-'));
    // Each activate script appends a line to its marker file: one line means it ran once.
    const big = (which: string) => ({
      name: pkg(which),
      script: `mkdir -p $out/bin; head -c ${BLOB_BYTES} /dev/urandom > $out/blob; printf '#!/bin/sh\\necho activated ${pkg(which)}\\necho ran >> ${join(markers, which)}\\n' > $out/bin/activate; chmod +x $out/bin/activate`,
    });
    paths = await buildPackages([big('orphan'), big('group')]);
    const pushed = await cli(['push', 'main', '--compression', 'none', ...paths.values()], world.env);
    assert.equal(pushed.code, 0, pushed.stderr);
    // The agents must download them, as on another machine.
    await run('nix-store', ['--delete', ...paths.values()]);
  });

  after(async () => {
    await Promise.all(agents.map((a) => a.stop()));
    for (const pid of orphans) if (await liveArgv(pid)) process.kill(pid, 'SIGKILL');
    await Promise.all(proxies.map((p) => p.close()));
    await server?.stop();
  });

  /**
   * Deploys package `which` to a new agent `name` behind a slow proxy, SIGKILLs the agent once
   * the NAR is well under way (and its nix-store with it when `withNix`, as stopping a service's
   * whole control group would), restarts it on the same state dir and waits for the rollout.
   */
  const killDuringDownload = async (name: string, which: string, withNix: boolean) => {
    const storePath = paths.get(pkg(which))!;
    const proxy = await startSlowProxy(new URL(server.url), SLOW_RATE);
    proxies.push(proxy);
    const token = await world.createAgent(name);
    const stateDir = await mkdtemp(join(tmpdir(), `cairn-agent-${name}-`));
    const profile = join(world.profiles, name);
    const start = async () => {
      const a = await startAgent({ name, token, profile, server: proxy.url, stateDir });
      agents.push(a);
      await a.waitFor(/connected to/);
      return a;
    };
    const first = await start();
    const started = Date.now();
    const file = join(markers, `deploy-${name}.json`);
    await writeFile(file, JSON.stringify({ agents: { [name]: storePath } }));
    const rollout = cli(['deploy', 'activate', file, '--timeout', '45s'], world.env);

    const base = proxy.bytes;
    await waitUntil(`the download did not pass ${KILL_AFTER_BYTES} bytes`, 20_000, async () => {
      return proxy.bytes - base >= KILL_AFTER_BYTES;
    });
    // The journal on disk says the deployment is downloading, and a nix-store is doing it.
    const journal = JSON.parse(await readFile(join(stateDir, 'journal.json'), 'utf8')) as {
      phase: string;
      deployment: { storePath: string };
    };
    assert.equal(journal.phase, 'realise');
    assert.equal(journal.deployment.storePath, storePath);
    const nixPid = await realiseChild(first.child.pid!);
    assert.ok(nixPid, `the agent runs no nix-store --realise:\n${first.lines.join('\n')}`);
    orphans.push(nixPid);
    const exited = new Promise<void>((resolve) => first.child.once('exit', () => resolve()));
    first.child.kill('SIGKILL');
    if (withNix) process.kill(nixPid, 'SIGKILL');
    await exited;
    assert.equal(first.child.signalCode, 'SIGKILL');
    const killedAfter = proxy.bytes - base;
    assert.ok(killedAfter < BLOB_BYTES, `killed after ${killedAfter} bytes, before the NAR was whole`);
    // A lone orphan keeps downloading, slowly enough to be still at it when the agent restarts.
    proxy.rate = withNix ? Number.POSITIVE_INFINITY : CRAWL_RATE;

    const second = await start();
    await second.waitFor(/journal: deployment \d+ was interrupted at realise; finishing it first/);
    let overlapped = false;
    if (!withNix) {
      // The restarted agent's own realise starts while the orphan still holds the path's lock.
      await waitUntil('the restarted agent ran no nix-store --realise', 20_000, async () => {
        return (await realiseChild(second.child.pid!)) !== undefined;
      });
      overlapped = (await liveArgv(nixPid)) !== undefined;
      proxy.rate = Number.POSITIVE_INFINITY;
    }
    const r = await rollout;
    return { r, storePath, profile, second, nixPid, killedAfter, overlapped, started };
  };

  /** What every kill must end in: one deployment, succeeded, the new closure, one activation. */
  const assertFinished = async (
    name: string,
    which: string,
    o: Awaited<ReturnType<typeof killDuringDownload>>,
  ) => {
    assert.equal(o.r.code, 0, o.r.stdout + o.r.stderr);
    assert.match(o.r.stdout, new RegExp(`${name} \\| == succeeded`));
    assert.match(o.r.stdout, new RegExp(`${name}\\s+succeeded`));
    await o.second.waitFor(/deployment \d+: succeeded/);
    assert.equal(await profileTarget(o.profile), o.storePath);
    await run('nix-store', ['--verify-path', o.storePath]);
    // The restart finished the deployment; it did not run it a second time.
    assert.equal(await readFile(join(markers, which), 'utf8'), 'ran\n');
    assert.equal(
      o.r.stdout.split('\n').filter((l) => l === `${name} | activated ${pkg(which)}`).length,
      1,
      o.r.stdout,
    );
    // The server holds one deployment for the agent, succeeded, to the new closure.
    const list = await fetch(`${server.url}/api/v1/workspaces/default/deployments?agent=${name}`, {
      headers: { Authorization: `Bearer ${server.adminToken}` },
    }).then((res) => res.json() as Promise<{ deployments: Array<{ state: string; storePath: string }> }>);
    assert.deepEqual(
      list.deployments.map((d) => [d.state, d.storePath]),
      [['succeeded', o.storePath]],
    );
  };

  it('finishes the deployment when the agent alone is killed and its nix-store goes on', async (t) => {
    const o = await killDuringDownload('dlkill1', 'orphan', false);
    assert.ok(o.overlapped, 'the orphaned nix-store had finished before the restarted agent realised');
    await assertFinished('dlkill1', 'orphan', o);
    // The orphan finished its download, once the link was fast again, and exited: it does not linger.
    await waitUntil(`the killed agent's nix-store (pid ${o.nixPid}) still runs`, 15_000, async () => {
      return (await liveArgv(o.nixPid)) === undefined;
    });
    t.diagnostic(
      `killed after ${(o.killedAfter / 1048576).toFixed(1)} MiB; done ${((Date.now() - o.started) / 1000).toFixed(1)} s after the deployment started`,
    );
  });

  it('downloads again and finishes when the agent is killed with its nix-store', async (t) => {
    const o = await killDuringDownload('dlkill2', 'group', true);
    await assertFinished('dlkill2', 'group', o);
    // The restarted agent fetched the NAR itself: the log shows two realises, two downloads.
    const lines = o.r.stdout.split('\n');
    assert.equal(lines.filter((l) => l.startsWith('dlkill2 | $ nix-store --realise ')).length, 2, o.r.stdout);
    assert.equal(lines.filter((l) => l.startsWith(`dlkill2 | copying path '${o.storePath}'`)).length, 2);
    t.diagnostic(
      `killed after ${(o.killedAfter / 1048576).toFixed(1)} MiB; done ${((Date.now() - o.started) / 1000).toFixed(1)} s after the deployment started`,
    );
  });
});
