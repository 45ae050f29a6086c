import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { plainPackage, profileTarget } from '../helpers/deploy-fixtures.ts';
import { ipCommand, netnsUnavailable, startNetWorld, stopNetWorlds, watchLink } from '../helpers/netns.ts';
import { RUN_TAG } from '../helpers/nix.ts';

/**
 * The agent in its own network namespace, joined to the host by a veth pair; the server listens
 * on the host side. The namespace's link is cut (by a closure's activation, or by the test) to
 * check that the agent rolls back when a switch breaks its network, and rides out a bad one.
 * Each test has its own namespace and server, and they run at once.
 */

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe('netns: lost connectivity and unreliable networks', { concurrency: true }, () => {
  let unavailable: string | undefined;
  let ip = 'ip';
  /** Per world, what to undo. */
  const undos: Array<Array<() => Promise<unknown>>> = [];
  before(async () => {
    unavailable = await netnsUnavailable();
    if (unavailable === undefined) ip = await ipCommand();
  });
  after(() => stopNetWorlds(undos));
  const netWorld = (index: number) => {
    const undo: Array<() => Promise<unknown>> = [];
    undos.push(undo);
    return startNetWorld(index, undo);
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

  it('a link that flaps five times, five seconds apart, during a deployment still ends succeeded', async (t) => {
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
});
