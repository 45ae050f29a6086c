import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readFile, realpath, rename, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { nixosPackage, profileTarget } from '../helpers/deploy-fixtures.ts';
import { useDeployTestbed } from '../helpers/deploy-testbed.ts';
import { buildPackages, RUN_TAG } from '../helpers/nix.ts';
import { cli } from '../helpers/server.ts';

/**
 * Rollback bookkeeping: the agent records what runs (/run/current-system), not only where the
 * profile pointed, and rolls back to it. Fake: switch-to-configuration is a script that behaves
 * as the real one here (it points the current-system link at the system it activates, for
 * `switch` and `test`); /run/current-system and /run/booted-system are links in a temporary
 * directory (CAIRN_AGENT_CURRENT_SYSTEM, CAIRN_AGENT_BOOTED_SYSTEM), as this machine is no NixOS.
 */
describe('rollback to the running system', () => {
  const bed = useDeployTestbed();

  it('returns to the running system when it is not the profile generation, and recomputes reboot-required', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'cairn-running-'));
    const record = join(dir, 'record');
    const link = join(dir, 'current-system');
    // Two kernels in "the store": the booted system and X, Y run kernel 1; Z brings kernel 2.
    const [k1, k2] = [join(dir, 'kernel-1'), join(dir, 'kernel-2')];
    await writeFile(k1, 'kernel 1');
    await writeFile(k2, 'kernel 2');
    const booted = join(dir, 'booted-system');
    await mkdir(booted);
    await symlink(k1, join(booted, 'kernel'));
    const paths = await bed.world.publish([
      nixosPackage(`run-x-${RUN_TAG}`, record, { currentSystem: link, kernel: k1 }),
      nixosPackage(`run-z-${RUN_TAG}`, record, { currentSystem: link, kernel: k2, check: 1 }),
    ]);
    const x = paths.get(`run-x-${RUN_TAG}`)!;
    const z = paths.get(`run-z-${RUN_TAG}`)!;
    const agent = await bed.agent('running', {
      env: { CAIRN_AGENT_CURRENT_SYSTEM: link, CAIRN_AGENT_BOOTED_SYSTEM: booted },
    });
    assert.equal((await bed.activate({ agents: { running: x } })).code, 0);
    // Someone ran `switch-to-configuration test` of another system Y by hand: the machine runs
    // Y while the profile (the boot default) still points at X.
    const y = (
      await buildPackages([nixosPackage(`run-y-${RUN_TAG}`, record, { currentSystem: link, kernel: k1 })])
    )
      .values()
      .next().value!;
    await symlink(y, `${link}.new`);
    await rename(`${link}.new`, link);

    // Z switches (it needs a reboot: another kernel), then its health check fails.
    const r = await bed.activate({
      agents: { running: z },
      healthChecks: { '*': [{ command: ['bin/check'], retries: 0 }] },
    });
    assert.equal(r.code, 1, r.stdout + r.stderr);
    assert.ok(
      r.stdout.includes(`running | running: ${y} (not the profile's generation; a rollback returns to it)`),
      r.stdout + agent.lines.join('\n'),
    );
    assert.match(r.stdout, /running\s+rolled-back/);
    const list = await cli(['deploy', 'list', '--agent', 'running', '--json'], bed.world.env);
    const last = (JSON.parse(list.stdout) as Array<{ state: string; rebootRequired: boolean }>)[0]!;
    // Z needed a reboot; after the rollback the machine runs Y, on the booted kernel: it does not.
    assert.deepEqual([last.state, last.rebootRequired], ['rolled-back', false]);
    // As before the deployment: Y runs (re-activated with `test`), the boot default is X (the
    // profile, and the bootloader by `boot`, which Z's switch had made its own).
    assert.equal(await realpath(link), y);
    assert.equal(await profileTarget(join(bed.world.profiles, 'running')), x);
    assert.equal(await readFile(record, 'utf8'), `${x} switch\n${z} switch\n${y} test\n${x} boot\n`);
  });
});
