import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { nixosPackage, plainPackage, profileTarget } from '../helpers/deploy-fixtures.ts';
import { useDeployTestbed } from '../helpers/deploy-testbed.ts';
import { RUN_TAG } from '../helpers/nix.ts';
import { cli } from '../helpers/server.ts';

describe('activation exit code 4 (some units failed)', () => {
  const bed = useDeployTestbed();
  const { agent, activate } = bed;
  /** The agent's deployments as `cairn deploy list --json` shows them, oldest first. */
  const deployments = async (agentName: string) => {
    const r = await cli(['deploy', 'list', '--agent', agentName, '--json'], bed.world.env);
    assert.equal(r.code, 0, r.stderr);
    return (JSON.parse(r.stdout) as Array<{ state: string; rebootRequired: boolean; reason: string | null }>)
      .slice()
      .reverse();
  };

  it('rolls back a NixOS switch that exits 4 by default, and keeps it under the tolerate policy', async () => {
    const record = join(bed.world.profiles, 'exit4-record');
    const paths = await bed.world.publish([
      nixosPackage(`exit4-good-${RUN_TAG}`, record),
      nixosPackage(`exit4-units-${RUN_TAG}`, record, { exit: 4 }),
    ]);
    const good = paths.get(`exit4-good-${RUN_TAG}`)!;
    const units = paths.get(`exit4-units-${RUN_TAG}`)!;
    await agent('exit4');
    const profile = join(bed.world.profiles, 'exit4');
    assert.equal((await activate({ agents: { exit4: good } })).code, 0);

    const failed = await activate({ agents: { exit4: units } });
    assert.equal(failed.code, 1, failed.stdout + failed.stderr);
    assert.match(
      failed.stdout,
      /exit4\s+\| == rolled-back: switch-to-configuration exited with 4: the system switched but some units failed/,
    );
    assert.match(failed.stdout, /exit4\s+rolled-back/);
    assert.equal(await profileTarget(profile), good);

    const tolerated = await activate({ agents: { exit4: units }, exit4: 'tolerate' });
    assert.equal(tolerated.code, 0, tolerated.stdout + tolerated.stderr);
    assert.match(
      tolerated.stdout,
      /exit4\s+\| note: some units failed \(exit 4\); tolerated by the exit-4 policy/,
    );
    assert.match(tolerated.stdout, /exit4\s+succeeded/);
    assert.equal(await profileTarget(profile), units);

    // good; units (exit 4), then good again by the rollback; units again, kept.
    assert.equal(
      await readFile(record, 'utf8'),
      `${good} switch\n${units} switch\n${good} switch\n${units} switch\n`,
    );
    assert.deepEqual(
      (await deployments('exit4')).map((d) => d.state),
      ['succeeded', 'rolled-back', 'succeeded'],
    );
  });

  it('treats exit 4 from a non-NixOS activation as a failure even under the tolerate policy', async () => {
    const paths = await bed.world.publish([
      plainPackage(`exit4-plain-good-${RUN_TAG}`),
      plainPackage(`exit4-plain-bad-${RUN_TAG}`, { activateExit: 4 }),
    ]);
    const good = paths.get(`exit4-plain-good-${RUN_TAG}`)!;
    await agent('exit4p');
    assert.equal((await activate({ agents: { exit4p: good } })).code, 0);
    const r = await activate({
      agents: { exit4p: paths.get(`exit4-plain-bad-${RUN_TAG}`)! },
      exit4: 'tolerate',
    });
    assert.equal(r.code, 1, r.stdout + r.stderr);
    assert.match(
      r.stdout,
      new RegExp(
        `exit4p\\s+\\| == rolled-back: bin/activate exited with 4: activated exit4-plain-bad-${RUN_TAG}`,
      ),
    );
    assert.equal(await profileTarget(join(bed.world.profiles, 'exit4p')), good);
  });
});
