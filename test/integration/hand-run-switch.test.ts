import assert from 'node:assert/strict';
import { access, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { nixosPackage, profileTarget, writeScript } from '../helpers/deploy-fixtures.ts';
import { useDeployTestbed } from '../helpers/deploy-testbed.ts';
import { fakeSystemd } from '../helpers/fake-systemd.ts';
import { buildPackages, RUN_TAG } from '../helpers/nix.ts';

/** The agent never races a switch someone runs by hand with nixos-rebuild. */
describe('a hand-run nixos-rebuild switch', () => {
  const bed = useDeployTestbed();

  it('fails the deployment before changing anything while a nixos-rebuild switch unit is active', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'cairn-handrun-'));
    const record = join(dir, 'record');
    // A fake systemctl: this machine has no systemd as PID 1 (see test/helpers/fake-systemd.ts).
    const fake = await fakeSystemd(join(dir, 'systemd'), process.env.PATH ?? '/usr/bin:/bin');
    // The unit name of newer nixos-rebuild-ng, with its random suffix.
    const active = join(fake.state, 'active-units');
    await writeFile(active, 'nixos-rebuild-switch-to-configuration-9767bc07.service\n');
    const paths = await bed.world.publish([nixosPackage(`handrun-busy-${RUN_TAG}`, record)]);
    const path = paths.get(`handrun-busy-${RUN_TAG}`)!;
    await bed.agent('handbusy', { env: { ...fake.env, CAIRN_AGENT_CURRENT_SYSTEM: join(dir, 'current') } });
    const profile = join(bed.world.profiles, 'handbusy');

    const r = await bed.activate({ agents: { handbusy: path } });
    assert.equal(r.code, 1, r.stdout + r.stderr);
    assert.match(
      r.stdout,
      /handbusy\s+\| == failed: nixos-rebuild is switching this machine \(unit nixos-rebuild-switch-to-configuration-9767bc07\.service is active\); nothing was changed: deploy again once it has finished/,
    );
    await assert.rejects(access(profile), { code: 'ENOENT' });
    await assert.rejects(access(record), { code: 'ENOENT' });
    assert.ok(
      (await fake.calls()).some(
        (c) => c.includes('list-units') && c.endsWith('nixos-rebuild-switch-to-configuration*'),
      ),
    );

    // Once it has finished, the same deployment goes through.
    await rm(active);
    const again = await bed.activate({ agents: { handbusy: path } });
    assert.equal(again.code, 0, again.stdout + again.stderr);
    assert.equal(await profileTarget(profile), path);
    assert.equal(await readFile(record, 'utf8'), `${path} switch\n`);
  });

  it('leaves the profile alone on rollback when someone switched it since the agent set it', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'cairn-handrun-'));
    const record = join(dir, 'record');
    const link = join(dir, 'current-system');
    const profile = join(bed.world.profiles, 'handprof');
    // What the person's nixos-rebuild switched to: a system in the local store.
    const theirs = (await buildPackages([nixosPackage(`handrun-theirs-${RUN_TAG}`, record)])).values().next()
      .value!;
    await writeFile(join(dir, 'theirs'), theirs);
    const bad = nixosPackage(`handrun-bad-${RUN_TAG}`, record);
    const paths = await bed.world.publish([
      nixosPackage(`handrun-base-${RUN_TAG}`, record, { currentSystem: link }),
      {
        name: bad.name,
        // While the agent's switch runs, nixos-rebuild sets the profile; then the switch fails.
        script: [
          'mkdir -p $out/bin',
          'echo 24.05 > $out/nixos-version',
          writeScript(
            'bin/switch-to-configuration',
            [
              `echo "$(dirname "$(dirname "$0")") $1" >> ${record}`,
              `nix-env --profile ${profile} --set "$(cat ${dir}/theirs)"`,
              'echo "the activation script failed" >&2',
              'exit 2',
            ].join('\n'),
          ),
        ].join('\n'),
      },
    ]);
    const base = paths.get(`handrun-base-${RUN_TAG}`)!;
    const failing = paths.get(bad.name)!;
    await bed.agent('handprof', { env: { CAIRN_AGENT_CURRENT_SYSTEM: link } });
    assert.equal((await bed.activate({ agents: { handprof: base } })).code, 0);

    const r = await bed.activate({ agents: { handprof: failing } });
    assert.equal(r.code, 1, r.stdout + r.stderr);
    assert.ok(
      r.stdout.includes(
        `handprof | == failed: switch-to-configuration exited with 2: the activation script failed; not rolled back: the profile ${profile} now points to ${theirs}, not to ${failing} where the agent set it (someone switched this machine meanwhile, such as with nixos-rebuild); left it as it is`,
      ),
      r.stdout,
    );
    assert.equal(await profileTarget(profile), theirs);
    // The previous system was not re-activated over theirs.
    assert.equal(await readFile(record, 'utf8'), `${base} switch\n${failing} switch\n`);
  });
});
