import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { nixosPackage, profileTarget } from '../helpers/deploy-fixtures.ts';
import { useDeployTestbed } from '../helpers/deploy-testbed.ts';
import { RUN_TAG } from '../helpers/nix.ts';
import { adminApi, cli } from '../helpers/server.ts';

describe('a staged rollout with a canary', () => {
  const bed = useDeployTestbed();

  it('halts when the canary fails to activate: no other agent receives the deployment, exit 1', async () => {
    const record = join(bed.world.profiles, 'canary-record');
    const paths = await bed.world.publish([
      nixosPackage(`canary-v1-${RUN_TAG}`, record),
      nixosPackage(`canary-v2-${RUN_TAG}`, record),
      nixosPackage(`canary-bad-${RUN_TAG}`, record, { exit: 1 }),
    ]);
    const v1 = paths.get(`canary-v1-${RUN_TAG}`)!;
    const good = paths.get(`canary-v2-${RUN_TAG}`)!;
    const bad = paths.get(`canary-bad-${RUN_TAG}`)!;
    const names = ['c1', 'c2', 'c3', 'c4', 'c5', 'c6'];
    for (const n of names) await bed.agent(n);
    const tagged = await cli(['agent', 'tag', 'c1', 'canary'], bed.world.env);
    assert.equal(tagged.code, 0, tagged.stderr);
    // Every machine runs v1, deployed at once (no policy).
    const first = await bed.activate({ agents: Object.fromEntries(names.map((n) => [n, v1])) });
    assert.equal(first.code, 0, first.stdout + first.stderr);

    const r = await bed.activate({
      agents: Object.fromEntries(names.map((n) => [n, n === 'c1' ? bad : good])),
      rollout: { canary: ['tag:canary'], batches: ['50%', '100%'], bake: '0' },
    });
    assert.equal(r.code, 1, r.stdout + r.stderr);
    assert.match(r.stdout + r.stderr, /canary c1 failed/);
    // The canary tried and went back to v1; nobody else switched.
    for (const n of names) assert.equal(await profileTarget(join(bed.world.profiles, n)), v1, n);
    const list = (await adminApi(bed.server, 'GET', '/deployments?limit=20')) as {
      deployments: Array<{ agent: string; state: string; rolloutId: number }>;
    };
    const rolloutId = list.deployments.find((d) => d.agent === 'c1')!.rolloutId;
    const rollout = (await adminApi(bed.server, 'GET', `/rollouts/${rolloutId}`)) as {
      staged: { state: string; reason: string; batches: Array<{ state: string }> };
      deployments: Array<{ agent: string; state: string; rolloutState: string }>;
    };
    assert.equal(rollout.staged.state, 'failed');
    assert.match(rollout.staged.reason, /canary c1 failed/);
    assert.deepEqual(
      rollout.deployments.map((d) => [d.agent, d.state, d.rolloutState]),
      [['c1', 'rolled-back', 'failed'], ...names.slice(1).map((n) => [n, 'cancelled', 'cancelled'])],
    );
    // v2 was never switched to anywhere.
    assert.doesNotMatch(await readFile(record, 'utf8'), new RegExp(good));
  });
});
