import assert from 'node:assert/strict';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { plainPackage, profileTarget, writeDeployJson } from '../helpers/deploy-fixtures.ts';
import { useDeployTestbed } from '../helpers/deploy-testbed.ts';
import { RUN_TAG } from '../helpers/nix.ts';
import { cli } from '../helpers/server.ts';

describe('safety: rollback on failed checks, crash-safe agent', () => {
  const bed = useDeployTestbed();
  const { activate } = bed;
  let http500: Server;
  let http500Url: string;
  before(async () => {
    http500 = createServer((_req, res) => {
      res.writeHead(500, { 'Content-Type': 'text/plain' });
      res.end('database unreachable\n');
    });
    await new Promise<void>((r) => http500.listen(0, '127.0.0.1', r));
    http500Url = `http://127.0.0.1:${(http500.address() as AddressInfo).port}/health`;
  });
  after(() => http500.close());
  const agent = (name: string, token: string, stateDir?: string) =>
    bed.agent(name, stateDir ? { token, stateDir } : { token });

  it('rolls back on a failing rollbackScript, a failing command check and an HTTP check answering 500', async () => {
    const paths = await bed.world.publish([
      plainPackage(`safe-good-${RUN_TAG}`),
      plainPackage(`safe-next-${RUN_TAG}`),
      {
        name: `check-fails-${RUN_TAG}`,
        script: `mkdir -p $out/bin; printf '#!/bin/sh\\necho "service not answering on :8080"\\nexit 3\\n' > $out/bin/check; chmod +x $out/bin/check`,
      },
      {
        name: `rollback-script-${RUN_TAG}`,
        script: `printf '#!/bin/sh\\necho "smoke test failed"\\nexit 1\\n' > $out; chmod +x $out`,
      },
    ]);
    const good = paths.get(`safe-good-${RUN_TAG}`)!;
    const next = paths.get(`safe-next-${RUN_TAG}`)!;
    const withCheck = paths.get(`check-fails-${RUN_TAG}`)!;
    await agent('safe1', await bed.world.createAgent('safe1'));
    const profile = join(bed.world.profiles, 'safe1');
    assert.equal((await activate({ agents: { safe1: good } })).code, 0);

    const script = await activate({
      agents: { safe1: next },
      rollbackScript: { 'x86_64-linux': paths.get(`rollback-script-${RUN_TAG}`)! },
    });
    assert.equal(script.code, 1, script.stdout + script.stderr);
    assert.match(script.stdout, /== rolled-back: rollback script exited with 1: smoke test failed/);
    assert.equal(await profileTarget(profile), good);

    const command = await activate({
      agents: { safe1: withCheck },
      healthChecks: { '*': [{ command: ['bin/check'], retries: 1, intervalSeconds: 0 }] },
    });
    assert.equal(command.code, 1, command.stdout + command.stderr);
    assert.match(
      command.stdout,
      /== rolled-back: command check bin\/check failed after 2 attempt\(s\): exited with 3: service not answering on :8080/,
    );
    assert.equal(await profileTarget(profile), good);

    const http = await activate({
      agents: { safe1: next },
      healthChecks: { safe1: [{ http: http500Url, status: 200, retries: 0 }] },
    });
    assert.equal(http.code, 1, http.stdout + http.stderr);
    assert.match(
      http.stdout,
      /== rolled-back: HTTP check .* failed after 1 attempt\(s\): answered 500: database unreachable/,
    );
    assert.equal(await profileTarget(profile), good);
  });

  it('refuses health checks for agents the file does not deploy', async () => {
    const r = await activate({
      agents: { safe1: `/nix/store/${'a'.repeat(32)}-x` },
      healthChecks: { nobody: [{ http: 'http://127.0.0.1:1/' }], '*': [{ command: [] }] },
    });
    assert.equal(r.code, 2);
    assert.match(r.stderr, /healthChecks/);
  });

  it('finishes a deployment from its journal when the agent is killed during activation or checks', async () => {
    const marker = join(await mkdtemp(join(tmpdir(), 'cairn-kill-')), 'killed-once');
    const killer = (name: string) =>
      `if [ ! -e ${marker}-${name} ]; then touch ${marker}-${name}; pkill -9 -f "deploy agent ${name} "; sleep 2; fi; echo survived`;
    const paths = await bed.world.publish([
      plainPackage(`kill-base-${RUN_TAG}`),
      {
        name: `kill-activate-${RUN_TAG}`,
        script: `mkdir -p $out/bin; printf '#!/bin/sh\\n${killer('killa')}\\n' > $out/bin/activate; chmod +x $out/bin/activate`,
      },
      {
        name: `kill-check-${RUN_TAG}`,
        script: `mkdir -p $out/bin; printf '#!/bin/sh\\n${killer('killc')}\\n' > $out/bin/check; chmod +x $out/bin/check`,
      },
    ]);
    for (const [name, path, extra] of [
      ['killa', paths.get(`kill-activate-${RUN_TAG}`)!, {}],
      [
        'killc',
        paths.get(`kill-check-${RUN_TAG}`)!,
        { healthChecks: { '*': [{ command: ['bin/check'], retries: 0 }] } },
      ],
    ] as const) {
      const token = await bed.world.createAgent(name);
      const stateDir = await mkdtemp(join(tmpdir(), `cairn-agent-${name}-`));
      const first = await agent(name, token, stateDir);
      const f = await writeDeployJson(bed.world.profiles, { agents: { [name]: path }, ...extra });
      const activation = cli(['deploy', 'activate', f, '--timeout', '90s'], bed.world.env);
      await Promise.race([
        new Promise<void>((resolve) => first.child.once('exit', () => resolve())),
        new Promise((_, reject) =>
          setTimeout(() => reject(new Error(`agent was not killed:\n${first.lines.join('\n')}`)), 30_000),
        ),
      ]);
      assert.equal(first.child.signalCode, 'SIGKILL');
      const second = await agent(name, token, stateDir);
      await second.waitFor(/was interrupted at (activate|health-check); finishing it first/);
      const r = await activation;
      assert.equal(r.code, 0, r.stdout + r.stderr);
      assert.match(r.stdout, new RegExp(`${name}\\s+succeeded`));
      assert.equal(await profileTarget(join(bed.world.profiles, name)), path);
      // The restarted agent re-attached to the running activation instead of starting it again.
      if (name === 'killa') {
        assert.equal(
          r.stdout.split('\n').filter((l) => l.startsWith('killa | $ ') && l.endsWith('/bin/activate'))
            .length,
          1,
        );
      }
      assert.equal(r.stdout.split('\n').filter((l) => l === `${name} | survived`).length, 1);
    }
  });

  it('starts with a clear warning, not a crash, when the journal is corrupt', async () => {
    const token = await bed.world.createAgent('corrupt1');
    const stateDir = await mkdtemp(join(tmpdir(), 'cairn-agent-corrupt-'));
    await writeFile(join(stateDir, 'journal.json'), '{"version":1,"deployment":{"id":"7","storePa');
    const a = await agent('corrupt1', token, stateDir);
    await a.waitFor(/WARNING: the journal was corrupt \(not JSON.*moved it to .*journal\.json\.corrupt-\d+/);
    const paths = await bed.world.publish([plainPackage(`after-corrupt-${RUN_TAG}`)]);
    const r = await activate({ agents: { corrupt1: paths.get(`after-corrupt-${RUN_TAG}`)! } });
    assert.equal(r.code, 0, r.stdout + r.stderr);
  });

  it('rolls back on request with cairn deploy rollback, as a deployment with logs', async () => {
    const paths = await bed.world.publish([
      plainPackage(`rb-one-${RUN_TAG}`),
      plainPackage(`rb-two-${RUN_TAG}`),
    ]);
    await agent('rb1', await bed.world.createAgent('rb1'));
    assert.equal((await activate({ agents: { rb1: paths.get(`rb-one-${RUN_TAG}`)! } })).code, 0);
    assert.equal((await activate({ agents: { rb1: paths.get(`rb-two-${RUN_TAG}`)! } })).code, 0);
    const r = await cli(['deploy', 'rollback', 'rb1'], bed.world.env);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.match(r.stdout, new RegExp(`rb1 \\| activated rb-one-${RUN_TAG}`));
    assert.equal(await profileTarget(join(bed.world.profiles, 'rb1')), paths.get(`rb-one-${RUN_TAG}`));
    const none = await cli(['deploy', 'rollback', 'safe-nobody'], bed.world.env);
    assert.equal(none.code, 1);
    assert.match(none.stderr, /no agent 'safe-nobody'/);
  });

  it('soak: ten deployments in a row, alternating good and failing, end in ten correct states', async () => {
    const pkgs = [];
    for (let i = 0; i < 10; i++) {
      pkgs.push(
        i % 2 === 0
          ? plainPackage(`soak-${i}-${RUN_TAG}`)
          : plainPackage(`soak-${i}-${RUN_TAG}`, { activateExit: 1 }),
      );
    }
    const paths = await bed.world.publish(pkgs);
    await agent('soak1', await bed.world.createAgent('soak1'));
    for (let i = 0; i < 10; i++) {
      const r = await activate({ agents: { soak1: paths.get(`soak-${i}-${RUN_TAG}`)! } });
      if (i % 2 === 0) assert.equal(r.code, 0, `deployment ${i}: ${r.stdout}`);
      else {
        assert.equal(r.code, 1, `deployment ${i}: ${r.stdout}`);
        assert.match(r.stdout, /soak1\s+rolled-back/);
      }
    }
    assert.equal(await profileTarget(join(bed.world.profiles, 'soak1')), paths.get(`soak-8-${RUN_TAG}`));
    const list = await fetch(`${bed.server.url}/api/v1/workspaces/default/deployments?agent=soak1`, {
      headers: { Authorization: `Bearer ${bed.server.adminToken}` },
    }).then((res) => res.json() as Promise<{ deployments: Array<{ state: string }> }>);
    assert.deepEqual(
      list.deployments.map((d) => d.state).reverse(),
      Array.from({ length: 10 }, (_, i) => (i % 2 === 0 ? 'succeeded' : 'rolled-back')),
    );
  });
});
