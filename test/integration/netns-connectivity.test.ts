import assert from 'node:assert/strict';
import { readlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { type AgentProcess, startAgent } from '../helpers/agent-process.ts';
import { type DeployWorld, deployWorld, plainPackage } from '../helpers/deploy-fixtures.ts';
import { createNetns, ipCommand, type Netns, netnsUnavailable, watchLink } from '../helpers/netns.ts';
import { buildPackages, RUN_TAG, run } from '../helpers/nix.ts';
import { cli, startTestServer, type TestServer } from '../helpers/server.ts';

/**
 * The agent in its own network namespace, joined to the host by a veth pair; the server listens
 * on the host side. Tests cut the namespace's link (from its activation, or from the test) to
 * check that the agent rolls back when a switch breaks its network and rides out a bad one.
 */

async function profileTarget(profile: string): Promise<string> {
  const link = await readlink(profile);
  return await readlink(join(profile, '..', link));
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** A deployment as `GET .../deployments` lists it, as far as these tests look. */
interface DeploymentRow {
  id: number;
  state: string;
  step: string | null;
  reason: string | null;
  finishedAt: string | null;
}

interface NetWorld {
  readonly ns: Netns;
  readonly server: TestServer;
  readonly world: DeployWorld;
  agent(name: string): Promise<AgentProcess>;
  activate(body: object, args?: readonly string[]): Promise<{ code: number; stdout: string; stderr: string }>;
  deployments(agent: string): Promise<DeploymentRow[]>;
}

describe('netns: connectivity loss and unreliable networks', { concurrency: true }, () => {
  let unavailable: string | undefined;
  let ip = 'ip';
  /** Per world, what to undo: agents, then the server, then the namespace. */
  const cleanups: Array<Array<() => Promise<unknown>>> = [];
  before(async () => {
    unavailable = await netnsUnavailable();
    if (unavailable === undefined) ip = await ipCommand();
  });
  after(async () => {
    // Worlds in parallel (a server may wait for requests in flight); within one, last in, first out.
    await Promise.all(
      cleanups.map(async (undo) => {
        for (const step of undo.reverse()) await step().catch(() => {});
      }),
    );
  });

  /** Namespace `index`, a server on its host side, and a deploy world on that server. */
  const netWorld = async (index: number): Promise<NetWorld> => {
    const undo: Array<() => Promise<unknown>> = [];
    cleanups.push(undo);
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
        const body = (await res.json()) as { deployments: DeploymentRow[] };
        return body.deployments;
      },
    };
  };

  it('rolls back on its own when the new closure takes the network down, within the confirm timeout + 10 s', async (t) => {
    if (unavailable) return t.skip(`network namespaces unavailable: ${unavailable}`);
    const w = await netWorld(0);
    const linkScript = (name: string, state: 'up' | 'down') => ({
      name,
      script: `mkdir -p $out/bin; printf '#!/bin/sh\\necho "link ${state}: ${name}"\\n${ip} link set ${w.ns.nsIf} ${state}\\n' > $out/bin/activate; chmod +x $out/bin/activate`,
    });
    const paths = await w.world.publish([
      linkScript(`net-good-${RUN_TAG}`, 'up'),
      linkScript(`net-cut-${RUN_TAG}`, 'down'),
    ]);
    const good = paths.get(`net-good-${RUN_TAG}`)!;
    const cut = paths.get(`net-cut-${RUN_TAG}`)!;
    const agent = await w.agent('lost1');
    await agent.waitFor(/connected to/);
    const first = await w.activate({ agents: { lost1: good } });
    assert.equal(first.code, 0, first.stdout + first.stderr);

    const confirmTimeoutSeconds = 10;
    const link = watchLink(w.ns);
    const r = await w.activate({ agents: { lost1: cut }, confirmTimeoutSeconds }, ['--timeout', '90s']);
    link.stop();
    assert.equal(r.code, 1, r.stdout + r.stderr);
    assert.match(
      r.stdout,
      /lost1 \| == rolled-back: lost connectivity: could not reach the server over a new connection within 10s after activating/,
    );
    // The log says what the new closure did and why the agent rolled back, though the
    // connection those lines were first sent on died with the link; the rollback's own
    // activation brought the link back.
    assert.match(r.stdout, new RegExp(`lost1 \\| link down: net-cut-${RUN_TAG}`));
    assert.match(r.stdout, /lost1 \| rolling back to \S+ \(because confirm failed: lost connectivity/);
    assert.match(r.stdout, new RegExp(`lost1 \\| link up: net-good-${RUN_TAG}`));
    assert.equal(await profileTarget(join(w.world.profiles, 'lost1')), good);
    assert.equal(await w.ns.carrier(), true);
    const down = link.changes.find((c) => !c.up);
    const up = link.changes.find((c) => c.up && down !== undefined && c.t > down.t);
    assert.ok(down && up, `the link never went down and came back: ${JSON.stringify(link.changes)}`);
    const outage = (up.t - down.t) / 1000;
    t.diagnostic(`link down for ${outage.toFixed(1)}s (confirm timeout ${confirmTimeoutSeconds}s)`);
    assert.ok(outage <= confirmTimeoutSeconds + 10, `rolled back after ${outage}s`);

    const [latest] = await w.deployments('lost1');
    assert.equal(latest?.state, 'rolled-back');
    assert.equal(latest?.step, 'confirm');
    const res = await fetch(`${w.server.url}/api/v1/workspaces/default/deployments/${latest?.id}`, {
      headers: { Authorization: `Bearer ${w.server.adminToken}` },
    });
    const record = (await res.json()) as { state: string; reason: string };
    assert.equal(record.state, 'rolled-back');
    assert.match(record.reason, /^lost connectivity: /);
  });
  it('a deployment created while the agent cannot reach the server succeeds once it can', async (t) => {
    if (unavailable) return t.skip(`network namespaces unavailable: ${unavailable}`);
    const w = await netWorld(1);
    const paths = await w.world.publish([
      plainPackage(`offline-a-${RUN_TAG}`),
      plainPackage(`offline-b-${RUN_TAG}`),
    ]);
    // A machine that boots without network: the agent never reached the server yet.
    await w.ns.setLink(false);
    const agent = await w.agent('offline1');
    await agent.waitFor(/cannot connect to .*ENETUNREACH/);
    const first = w.activate({ agents: { offline1: paths.get(`offline-a-${RUN_TAG}`)! } }, [
      '--timeout',
      '60s',
    ]);
    await sleep(3000);
    assert.equal((await w.deployments('offline1'))[0]?.state, 'pending');
    await w.ns.setLink(true);
    const upAt = Date.now();
    const a = await first;
    assert.equal(a.code, 0, a.stdout + a.stderr);
    assert.match(a.stdout, new RegExp(`offline1 \\| activated offline-a-${RUN_TAG}`));
    t.diagnostic(
      `booted offline: succeeded ${((Date.now() - upAt) / 1000).toFixed(1)}s after the link came up`,
    );

    // A machine that loses its network while connected: the server's message goes into a dead
    // connection, and the agent learns its desired state once the link is back.
    await w.ns.setLink(false);
    const second = w.activate({ agents: { offline1: paths.get(`offline-b-${RUN_TAG}`)! } }, [
      '--timeout',
      '60s',
    ]);
    await sleep(6000);
    assert.equal((await w.deployments('offline1'))[0]?.state, 'pending');
    await w.ns.setLink(true);
    const upAgain = Date.now();
    const b = await second;
    assert.equal(b.code, 0, b.stdout + b.stderr);
    assert.match(b.stdout, new RegExp(`offline1 \\| activated offline-b-${RUN_TAG}`));
    assert.equal(await profileTarget(join(w.world.profiles, 'offline1')), paths.get(`offline-b-${RUN_TAG}`));
    t.diagnostic(
      `dropped while connected: succeeded ${((Date.now() - upAgain) / 1000).toFixed(1)}s after the link came up`,
    );
  });

  it('a link that flaps five times, five seconds apart, during a deployment still ends succeeded', {
    todo: 'the flapping case fails (ECONNRESET); see the closing note',
  }, async (t) => {
    if (unavailable) return t.skip(`network namespaces unavailable: ${unavailable}`);
    const w = await netWorld(2);
    const name = `flappy-${RUN_TAG}`;
    const paths = await w.world.publish([
      plainPackage(`flap-base-${RUN_TAG}`),
      {
        name,
        script: [
          'mkdir -p $out/bin',
          `printf '#!/bin/sh\\necho "activation started"\\nsleep 10\\necho "activation finished"\\n' > $out/bin/activate`,
          `printf '#!/bin/sh\\necho "checking"\\nsleep 12\\necho "healthy"\\n' > $out/bin/check`,
          'chmod +x $out/bin/activate $out/bin/check',
        ].join('; '),
      },
    ]);
    const agent = await w.agent('flap1');
    await agent.waitFor(/connected to/);
    assert.equal((await w.activate({ agents: { flap1: paths.get(`flap-base-${RUN_TAG}`)! } })).code, 0);

    const link = watchLink(w.ns);
    const deployment = w.activate(
      {
        agents: { flap1: paths.get(name)! },
        healthChecks: { flap1: [{ command: ['bin/check'], timeoutSeconds: 30, retries: 0 }] },
        confirmTimeoutSeconds: 60,
      },
      ['--timeout', '90s'],
    );
    await agent.waitFor(/deployment \d+: switching .*flappy-/);
    const flapStart = Date.now();
    let lastDown = 0;
    for (let i = 0; i < 5; i++) {
      await sleep(Math.max(0, flapStart + i * 5000 + 1000 - Date.now()));
      await w.ns.setLink(false);
      lastDown = Date.now();
      await sleep(2500);
      await w.ns.setLink(true);
    }
    const flapsEnded = Date.now();
    const r = await deployment;
    link.stop();
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /flap1 \| == succeeded/);
    assert.equal(link.changes.filter((c) => !c.up).length, 5, JSON.stringify(link.changes));
    // Every line the activation and the check printed reached the server. Delivery is at least
    // once: a line sent just before the link went down, whose receipt the server could not
    // show before the agent dropped that connection, is sent again on the next one.
    const printed = ['activation started', 'activation finished', 'checking', 'healthy'];
    const counts = printed.map((line) => r.stdout.split('\n').filter((l) => l === `flap1 | ${line}`).length);
    assert.ok(
      counts.every((n) => n >= 1),
      `missing lines (${printed.map((l, i) => `${l}: ${counts[i]}`).join(', ')}):\n${r.stdout}`,
    );
    assert.equal(await profileTarget(join(w.world.profiles, 'flap1')), paths.get(name));
    const [latest] = await w.deployments('flap1');
    assert.equal(latest?.state, 'succeeded');
    // All five flaps hit the deployment: it was still running when the link went down last.
    assert.ok(Date.parse(latest.finishedAt ?? '') > lastDown, `finished ${latest.finishedAt}`);
    const reconnects = agent.lines.filter((l) => /reconnecting in/.test(l)).length;
    const twice = counts.filter((n) => n > 1).length;
    t.diagnostic(
      `flaps took ${((flapsEnded - flapStart) / 1000).toFixed(1)}s; the agent reconnected ${reconnects} time(s); ${twice} of ${printed.length} lines came twice`,
    );
  });

  it('a NAR download cut half-way is resumed or retried and succeeds', {
    todo: 'the cut-download case fails; see the closing note',
  }, async (t) => {
    if (unavailable) return t.skip(`network namespaces unavailable: ${unavailable}`);
    const w = await netWorld(3);
    // 100 Mbit/s into the namespace: the 64 MiB NAR takes about five seconds, long enough to cut.
    const shaping = [
      'qdisc',
      'add',
      'dev',
      w.ns.hostIf,
      'root',
      ...'tbf rate 100mbit burst 64kb latency 500ms'.split(' '),
    ];
    const unshaped = await w.ns.tc(shaping).then(
      () => undefined,
      (err: Error) => err.message,
    );
    if (unshaped)
      return t.skip(`cannot limit the link's rate, so cannot cut a download half-way: ${unshaped}`);
    const name = `big-${RUN_TAG}`;
    const built = await buildPackages([
      {
        name,
        script: `mkdir -p $out/bin; head -c 67108864 /dev/urandom > $out/blob; printf '#!/bin/sh\\necho activated ${name}\\n' > $out/bin/activate; chmod +x $out/bin/activate`,
      },
    ]);
    const big = built.get(name)!;
    const pushed = await cli(['push', 'main', '--compression', 'none', big], w.world.env);
    assert.equal(pushed.code, 0, pushed.stderr);
    await run('nix-store', ['--delete', big]);
    const agent = await w.agent('dl1');
    await agent.waitFor(/connected to/);
    const before = await w.ns.txBytes();
    const deployment = w.activate({ agents: { dl1: big } }, ['--timeout', '100s']);
    let cutAt: number | undefined;
    const deadline = Date.now() + 60_000;
    while (cutAt === undefined) {
      if (Date.now() > deadline)
        assert.fail(`the download did not reach 32 MiB within 60 s:\n${agent.lines.join('\n')}`);
      if ((await w.ns.txBytes()) - before > 32 * 1024 * 1024) {
        await w.ns.setLink(false);
        cutAt = Date.now();
      }
      await sleep(20);
    }
    // Longer than Nix's own patience (a 10 s stall, then about 5 s of retries): the agent must retry.
    await sleep(25_000);
    await w.ns.setLink(true);
    const r = await deployment;
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /dl1 \| == succeeded/);
    // Nix noticed the stall and tried to resume; the agent ran the realise again.
    assert.match(r.stdout, /retrying from offset \d+/);
    assert.match(r.stdout, /dl1 \| realise attempt 1 of 5 failed on a download error; retrying in/);
    assert.equal(await profileTarget(join(w.world.profiles, 'dl1')), big);
    await run('nix-store', ['--verify-path', big]);
    t.diagnostic(`succeeded ${((Date.now() - cutAt) / 1000).toFixed(1)}s after the cut (25 s outage)`);
  });
});
