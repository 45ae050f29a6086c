import assert from 'node:assert/strict';
import { once } from 'node:events';
import { readFile, readlink } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { startAgent } from '../helpers/agent-process.ts';
import { nixosPackage, plainPackage, writeDeployJson } from '../helpers/deploy-fixtures.ts';
import { useDeployTestbed } from '../helpers/deploy-testbed.ts';
import { RUN_TAG } from '../helpers/nix.ts';
import { cli } from '../helpers/server.ts';

const deployJson = (dir: string, agents: Record<string, string>, extra: object = {}) =>
  writeDeployJson(dir, { agents, ...extra });

describe('cairn deploy activate and cairn deploy agent', () => {
  const bed = useDeployTestbed();
  const agent = (name: string, token: string) => bed.agent(name, { token });

  it('deploys a plain profile and a NixOS-kind closure, streaming both logs, and exits 0', async () => {
    const record = join(bed.world.profiles, 'switch-record');
    const paths = await bed.world.publish([
      plainPackage(`plain-a-${RUN_TAG}`),
      nixosPackage(`nixos-a-${RUN_TAG}`, record),
    ]);
    const plain = paths.get(`plain-a-${RUN_TAG}`)!;
    const nixos = paths.get(`nixos-a-${RUN_TAG}`)!;
    await agent('laptop', await bed.world.createAgent('laptop'));
    await agent('web1', await bed.world.createAgent('web1'));
    const file = await deployJson(bed.world.profiles, { laptop: plain, web1: nixos });
    const r = await cli(['deploy', 'activate', file], bed.world.env);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.match(r.stdout, new RegExp(`laptop \\| activated plain-a-${RUN_TAG}`));
    assert.match(r.stdout, /web1\s+\| switching to configuration/);
    assert.match(r.stdout, /laptop\s+succeeded/);
    assert.match(r.stdout, /web1\s+succeeded/);
    assert.equal(
      await readlink(join(bed.world.profiles, 'laptop')).then((l) => readlink(join(bed.world.profiles, l))),
      plain,
    );
    assert.equal(
      await readlink(join(bed.world.profiles, 'web1')).then((l) => readlink(join(bed.world.profiles, l))),
      nixos,
    );
    assert.equal(await readFile(record, 'utf8'), `${nixos} switch\n`);
    const list = await cli(['agent', 'list'], bed.world.env);
    assert.match(list.stdout, new RegExp(`web1\\s+-\\s+yes\\s+\\S+\\s+1\\s+\\S+\\s+\\S+\\s+${nixos}`));
  });

  it('rolls back a NixOS-kind closure whose activation fails, re-activating the previous one, and exits 1', async () => {
    const record = join(bed.world.profiles, 'switch-record-2');
    const paths = await bed.world.publish([
      nixosPackage(`nixos-good-${RUN_TAG}`, record),
      nixosPackage(`nixos-bad-${RUN_TAG}`, record, { exit: 1 }),
    ]);
    const good = paths.get(`nixos-good-${RUN_TAG}`)!;
    const bad = paths.get(`nixos-bad-${RUN_TAG}`)!;
    await agent('db1', await bed.world.createAgent('db1'));
    assert.equal(
      (await cli(['deploy', 'activate', await deployJson(bed.world.profiles, { db1: good })], bed.world.env))
        .code,
      0,
    );
    const r = await cli(
      ['deploy', 'activate', await deployJson(bed.world.profiles, { db1: bad })],
      bed.world.env,
    );
    assert.equal(r.code, 1, r.stdout + r.stderr);
    assert.match(r.stdout, /db1\s+\| == rolled-back: switch-to-configuration exited with 1/);
    assert.match(r.stdout, /db1\s+rolled-back/);
    const profile = join(bed.world.profiles, 'db1');
    assert.equal(await readlink(join(bed.world.profiles, await readlink(profile))), good);
    // The good one switched, the bad one tried, the good one switched again.
    assert.equal(await readFile(record, 'utf8'), `${good} switch\n${bad} switch\n${good} switch\n`);
  });

  it('converges an agent that was offline, running only the newest of two queued deployments', async () => {
    const paths = await bed.world.publish([
      plainPackage(`plain-old-${RUN_TAG}`),
      plainPackage(`plain-new-${RUN_TAG}`),
    ]);
    const token = await bed.world.createAgent('sleeper');
    const first = await cli(
      [
        'deploy',
        'activate',
        '--async',
        await deployJson(bed.world.profiles, { sleeper: paths.get(`plain-old-${RUN_TAG}`)! }),
      ],
      bed.world.env,
    );
    assert.equal(first.code, 0, first.stderr);
    const second = await cli(
      [
        'deploy',
        'activate',
        '--async',
        await deployJson(bed.world.profiles, { sleeper: paths.get(`plain-new-${RUN_TAG}`)! }),
      ],
      bed.world.env,
    );
    assert.equal(second.code, 0, second.stderr);
    const a = await agent('sleeper', token);
    await a.waitFor(/deployment \d+: succeeded/);
    assert.equal(a.lines.filter((l) => /switching/.test(l)).length, 1);
    const profile = join(bed.world.profiles, 'sleeper');
    assert.equal(
      await readlink(join(bed.world.profiles, await readlink(profile))),
      paths.get(`plain-new-${RUN_TAG}`),
    );
    const rollout1 = await fetch(
      `${bed.server.url}/api/v1/workspaces/default/rollouts/${first.stdout.trim()}`,
      {
        headers: { Authorization: `Bearer ${bed.server.adminToken}` },
      },
    ).then((res) => res.json() as Promise<{ deployments: Array<{ state: string }> }>);
    assert.equal(rollout1.deployments[0]?.state, 'cancelled');
  });

  it('lets only one agent process manage a profile, with a clear message for the second', async () => {
    const token = await bed.world.createAgent('single');
    await agent('single', token);
    const second = await startAgent({
      name: 'single',
      token,
      profile: join(bed.world.profiles, 'single'),
      server: bed.server.url,
    });
    await second.waitFor(/another cairn agent \(pid \d+\) manages profile/);
    const code = second.child.exitCode ?? (await once(second.child, 'exit'))[0];
    assert.equal(code, 1);
  });

  it("closes a revoked agent's connection within 2 s and refuses its reconnects, saying why", async () => {
    const a = await agent('revoked1', await bed.world.createAgent('revoked1'));
    const started = Date.now();
    assert.equal((await cli(['agent', 'revoke', 'revoked1'], bed.world.env)).code, 0);
    await a.waitFor(/agent token was revoked/, 2000);
    assert.ok(Date.now() - started < 2000);
    await a.waitFor(/refused the connection \(HTTP 401\).*revoked/, 10_000);
  });

  it('refuses a deploy.json with an unknown agent and a bad store path, naming both, creating nothing', async () => {
    const file = await deployJson(bed.world.profiles, {
      ghost: '/nix/store/aaaa-not-a-path',
      web1: '/nix/store/x',
    });
    const r = await cli(['deploy', 'activate', file], bed.world.env);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /agents\.ghost: not a valid store path/);
    assert.match(r.stderr, /agents\.web1: not a valid store path/);
    const unknown = await deployJson(bed.world.profiles, {
      ghost: `/nix/store/${'a'.repeat(32)}-x`,
      web1: `/nix/store/${'b'.repeat(32)}-y`,
    });
    const r2 = await cli(['deploy', 'activate', unknown], bed.world.env);
    assert.equal(r2.code, 2, r2.stderr);
    assert.match(r2.stderr, /unknown agent 'ghost'/);
    assert.match(r2.stderr, /is in no cache of this workspace/);
    const list = await cli(
      ['deploy', 'activate', '--async', join(bed.world.profiles, 'missing.json')],
      bed.world.env,
    );
    assert.equal(list.code, 2);
    assert.match(list.stderr, /Cannot read .*missing\.json: ENOENT/);
  });
});
