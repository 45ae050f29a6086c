import assert from 'node:assert/strict';
import { join } from 'node:path';
import { before, describe, it } from 'node:test';
import { plainPackage, profileTarget, writeDeployJson } from '../helpers/deploy-fixtures.ts';
import { useDeployTestbed } from '../helpers/deploy-testbed.ts';
import { RUN_TAG } from '../helpers/nix.ts';
import { cli } from '../helpers/server.ts';

/** One deployment as `cairn deploy list --json` prints it. */
interface Listed {
  readonly id: number;
  readonly rolloutId: number;
  readonly storePath: string;
  readonly kind: string;
  readonly state: string;
}

/**
 * The options of `cairn deploy activate` and `cairn deploy rollback` that change what is
 * deployed or how long the command waits, as docs/cli.md describes them: `--timeout`,
 * `--agent` and `--to`. Real server, real agents, real Nix.
 */
describe('cairn deploy activate --timeout/--agent and cairn deploy rollback --to', () => {
  const bed = useDeployTestbed();
  const { agent } = bed;
  let paths: Map<string, string>;
  const pkg = (v: number) => paths.get(`opt-v${v}-${RUN_TAG}`)!;

  before(async () => {
    paths = await bed.world.publish([
      ...[1, 2, 3].map((v) => plainPackage(`opt-v${v}-${RUN_TAG}`)),
      {
        name: `opt-slow-${RUN_TAG}`,
        script: `mkdir -p $out/bin; printf '#!/bin/sh\\necho slow start\\nsleep 4\\necho slow done\\n' > $out/bin/activate; chmod +x $out/bin/activate`,
      },
    ]);
  });

  const deployJson = (agentPaths: Record<string, string>) =>
    writeDeployJson(bed.world.profiles, { agents: agentPaths });
  const listed = async (name: string): Promise<Listed[]> => {
    const r = await cli(['deploy', 'list', '--agent', name, '--json'], bed.world.env);
    assert.equal(r.code, 0, r.stderr);
    return JSON.parse(r.stdout) as Listed[];
  };
  const activate = async (agentPaths: Record<string, string>) => {
    const r = await bed.activate({ agents: agentPaths });
    assert.equal(r.code, 0, r.stdout + r.stderr);
  };

  it('--timeout: stops waiting at the deadline, lists the unfinished agent, exits 3 and leaves it pending', async () => {
    // An agent that exists but never connects, like a laptop that is offline.
    await bed.world.createAgent('offline');
    const started = Date.now();
    const r = await cli(
      ['deploy', 'activate', '--timeout', '1.5s', await deployJson({ offline: pkg(1) })],
      bed.world.env,
    );
    const elapsed = Date.now() - started;
    assert.equal(r.code, 3, r.stdout + r.stderr);
    assert.ok(elapsed >= 1500, `returned after ${elapsed} ms, before the 1.5 s timeout`);
    assert.ok(elapsed < 10_000, `returned after ${elapsed} ms, long after the 1.5 s timeout`);
    assert.match(r.stderr, /timed out with 1 deployment\(s\) not finished: offline \(pending\)/);
    assert.match(r.stdout, new RegExp(`offline\\s+pending\\s+-\\s+-\\s+${pkg(1)}`));
    const [d] = await listed('offline');
    assert.equal(d?.state, 'pending');
    assert.equal(d?.storePath, pkg(1));
  });

  it('--timeout: leaves a deployment still activating at the deadline running, and exits 3', async () => {
    const a = await agent('slow');
    const r = await cli(
      [
        'deploy',
        'activate',
        '--timeout',
        '1.5s',
        await deployJson({ slow: paths.get(`opt-slow-${RUN_TAG}`)! }),
      ],
      bed.world.env,
    );
    assert.equal(r.code, 3, r.stdout + r.stderr);
    assert.match(r.stderr, /timed out with 1 deployment\(s\) not finished: slow \(running\)/);
    assert.equal((await listed('slow'))[0]?.state, 'running');
    // The agent goes on regardless: the timeout only stops the command waiting.
    await a.waitFor(/deployment \d+: succeeded/, 30_000);
    const deadline = Date.now() + 10_000;
    while ((await listed('slow'))[0]?.state === 'running' && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.equal((await listed('slow'))[0]?.state, 'succeeded');
  });

  it('--timeout: a bad duration is refused with exit 2 before anything is created', async () => {
    const r = await cli(
      ['deploy', 'activate', '--timeout', '10 minutes', await deployJson({ offline: pkg(2) })],
      bed.world.env,
    );
    assert.equal(r.code, 2, r.stdout + r.stderr);
    assert.match(
      r.stderr,
      /Cannot use --timeout: expected a duration such as 90s, 15m, 2h or 1d \(10 minutes\)/,
    );
    assert.equal((await listed('offline')).length, 1);
  });

  it('--agent: deploys only to the named agent of the file; the other keeps what it runs', async () => {
    const picked = await agent('picked');
    const skipped = await agent('skipped');
    await activate({ picked: pkg(1), skipped: pkg(1) });
    const skippedLines = skipped.lines.length;
    const file = await deployJson({ picked: pkg(2), skipped: pkg(2) });
    // DEPLOY.JSON first: `--agent NAME... DEPLOY.JSON` as the synopsis has it fails (see below).
    const r = await cli(['deploy', 'activate', file, '--agent', 'picked'], bed.world.env);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.match(r.stderr, /deploying to picked\n/);
    assert.match(r.stdout, new RegExp(`picked \\| activated opt-v2-${RUN_TAG}`));
    assert.doesNotMatch(r.stdout, /skipped/);
    assert.equal(await profileTarget(join(bed.world.profiles, 'picked')), pkg(2));
    assert.equal(await profileTarget(join(bed.world.profiles, 'skipped')), pkg(1));
    // Nothing was created for the other agent, and it was told nothing new.
    assert.deepEqual(
      (await listed('skipped')).map((d) => d.storePath),
      [pkg(1)],
    );
    assert.deepEqual(
      (await listed('picked')).map((d) => d.storePath),
      [pkg(2), pkg(1)],
    );
    await picked.waitFor(/deployment \d+: succeeded/);
    assert.deepEqual(
      skipped.lines.slice(skippedLines).filter((l) => /deployment \d+/.test(l)),
      [],
    );
  });

  it('--agent: accepts the order of the synopsis, `--agent NAME DEPLOY.JSON`', async () => {
    const file = await deployJson({ picked: pkg(3), skipped: pkg(3) });
    const r = await cli(['deploy', 'activate', '--agent', 'picked', file], bed.world.env);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.equal(await profileTarget(join(bed.world.profiles, 'picked')), pkg(3));
    assert.equal(await profileTarget(join(bed.world.profiles, 'skipped')), pkg(1));
  });

  it('--to: rolls back to the store path of the named deployment, not to the one before', async () => {
    const a = await agent('history');
    for (const v of [1, 2, 3]) await activate({ history: pkg(v) });
    const [third, second, first] = await listed('history');
    assert.deepEqual([first?.storePath, second?.storePath, third?.storePath], [pkg(1), pkg(2), pkg(3)]);
    const r = await cli(['deploy', 'rollback', 'history', '--to', String(first!.id)], bed.world.env);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.match(r.stdout, new RegExp(`history \\| activated opt-v1-${RUN_TAG}`));
    assert.match(
      r.stdout,
      new RegExp(`history\\s+succeeded\\s+\\S+\\s+[\\d.]+ \\S*B \\([+±-][^)]*\\)\\s+${pkg(1)}`),
    );
    // Without --to it would have gone to v2; with it, the agent runs v1.
    assert.equal(await profileTarget(join(bed.world.profiles, 'history')), pkg(1));
    const [rollback] = await listed('history');
    assert.equal(rollback?.kind, 'rollback');
    assert.equal(rollback?.storePath, pkg(1));
    assert.equal(rollback?.state, 'succeeded');
    assert.ok(a.lines.some((l) => new RegExp(`deployment ${rollback!.id}: succeeded`).test(l)));
  });

  it('--to: refuses a deployment of another agent with exit 1, creating nothing', async () => {
    const [other] = await listed('picked');
    const before = await listed('history');
    const r = await cli(['deploy', 'rollback', 'history', '--to', String(other!.id)], bed.world.env);
    assert.equal(r.code, 1, r.stdout + r.stderr);
    assert.match(r.stderr, new RegExp(`deployment ${other!.id} is not one of its deployments`));
    assert.deepEqual(await listed('history'), before);
    assert.equal(await profileTarget(join(bed.world.profiles, 'history')), pkg(1));
  });
});
