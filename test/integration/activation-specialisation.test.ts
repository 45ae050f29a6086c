import assert from 'node:assert/strict';
import { once } from 'node:events';
import { mkdtemp, readFile, realpath, rename, symlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { startAgent } from '../helpers/agent-process.ts';
import { nixosPackage, profileTarget } from '../helpers/deploy-fixtures.ts';
import { useDeployTestbed } from '../helpers/deploy-testbed.ts';
import { RUN_TAG } from '../helpers/nix.ts';
import { cli } from '../helpers/server.ts';

/**
 * NixOS specialisations. Fake: closures whose switch-to-configuration (the base's and each
 * specialisation's) records "<the system it belongs to> <goal>" and points a current-system link
 * at that system, as the real one does with /run/current-system (CAIRN_AGENT_CURRENT_SYSTEM: this
 * machine is no NixOS).
 */
describe('NixOS specialisations', () => {
  const bed = useDeployTestbed();
  const place = async (name: string) => {
    const dir = await mkdtemp(join(tmpdir(), `cairn-spec-${name}-`));
    return { record: join(dir, 'record'), link: join(dir, 'current-system') };
  };
  /** Points the link at `target` at once, as `nixos-rebuild switch --specialisation` leaves it. */
  const runNow = async (link: string, target: string) => {
    await symlink(target, `${link}.new`);
    await rename(`${link}.new`, link);
  };
  const lastDeployment = async (agentName: string) => {
    const r = await cli(['deploy', 'list', '--agent', agentName, '--json'], bed.world.env);
    return (JSON.parse(r.stdout) as Array<{ state: string; step: string | null; reason: string | null }>)[0]!;
  };

  it('keeps a machine on the specialisation it runs, and goes to the base when the new system lacks it', async () => {
    const { record, link } = await place('keep');
    const pkg = (tag: string, specialisations: string[]) =>
      nixosPackage(`spec-${tag}-${RUN_TAG}`, record, { currentSystem: link, specialisations });
    const paths = await bed.world.publish([
      pkg('a', ['gaming']),
      pkg('b', ['gaming']),
      nixosPackage(`spec-bad-${RUN_TAG}`, record, {
        currentSystem: link,
        specialisations: ['gaming'],
        exit: 2,
      }),
      pkg('c', []),
    ]);
    const bad = paths.get(`spec-bad-${RUN_TAG}`)!;
    const [a, b, c] = ['a', 'b', 'c'].map((t) => paths.get(`spec-${t}-${RUN_TAG}`)!) as [
      string,
      string,
      string,
    ];
    await bed.agent('spec', { env: { CAIRN_AGENT_CURRENT_SYSTEM: link } });
    assert.equal((await bed.activate({ agents: { spec: a } })).code, 0);
    // The user switched to the specialisation by hand: `nixos-rebuild switch --specialisation gaming`.
    await runNow(link, join(a, 'specialisation/gaming'));

    const r = await bed.activate({ agents: { spec: b } });
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.match(
      r.stdout,
      /spec\s+\| specialisation: gaming \(the machine runs it, and the new configuration has it\)/,
    );
    assert.equal(await realpath(link), join(b, 'specialisation/gaming'));
    // The profile (the boot default) holds the whole system, as nixos-rebuild sets it.
    assert.equal(await profileTarget(join(bed.world.profiles, 'spec')), b);

    // A failing switch of the specialisation rolls back to it, not to the base.
    const failed = await bed.activate({ agents: { spec: bad } });
    assert.equal(failed.code, 1, failed.stdout + failed.stderr);
    assert.match(failed.stdout, /spec\s+rolled-back/);
    assert.equal(await realpath(link), join(b, 'specialisation/gaming'));
    assert.equal(await profileTarget(join(bed.world.profiles, 'spec')), b);

    const gone = await bed.activate({ agents: { spec: c } });
    assert.equal(gone.code, 0, gone.stdout + gone.stderr);
    assert.match(
      gone.stdout,
      /spec\s+\| the machine runs specialisation gaming, which the new configuration does not have: switching to its base configuration, as nixos-rebuild switch does/,
    );
    assert.equal(await realpath(link), c);
    assert.equal(
      await readFile(record, 'utf8'),
      [
        `${a} switch`,
        `${join(b, 'specialisation/gaming')} switch`,
        `${join(bad, 'specialisation/gaming')} switch`,
        // The rollback: the running specialisation again, without touching the boot default,
        // then the profile's generation as the bootloader's default.
        `${join(b, 'specialisation/gaming')} test`,
        `${b} boot`,
        `${c} switch`,
        '',
      ].join('\n'),
    );
  });

  it('switches to the specialisation CAIRN_AGENT_SPECIALISATION names, and refuses a system without it', async () => {
    const { record, link } = await place('forced');
    const paths = await bed.world.publish([
      nixosPackage(`specf-d-${RUN_TAG}`, record, { currentSystem: link, specialisations: ['work'] }),
      nixosPackage(`specf-e-${RUN_TAG}`, record, { currentSystem: link, specialisations: ['gaming'] }),
    ]);
    const d = paths.get(`specf-d-${RUN_TAG}`)!;
    const e = paths.get(`specf-e-${RUN_TAG}`)!;
    await bed.agent('specf', {
      env: { CAIRN_AGENT_CURRENT_SYSTEM: link, CAIRN_AGENT_SPECIALISATION: 'work' },
    });
    const r = await bed.activate({ agents: { specf: d } });
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.equal(await realpath(link), join(d, 'specialisation/work'));

    const refused = await bed.activate({ agents: { specf: e } });
    assert.equal(refused.code, 1, refused.stdout + refused.stderr);
    const last = await lastDeployment('specf');
    assert.deepEqual(
      [last.state, last.step, last.reason],
      [
        'failed',
        'activate',
        `Cannot switch to specialisation work (CAIRN_AGENT_SPECIALISATION): ${e} has no specialisation/work; nothing was changed`,
      ],
    );
    assert.equal(await profileTarget(join(bed.world.profiles, 'specf')), d);
    assert.equal(await realpath(link), join(d, 'specialisation/work'));
    assert.equal(await readFile(record, 'utf8'), `${join(d, 'specialisation/work')} switch\n`);
  });

  it('refuses to start with a CAIRN_AGENT_SPECIALISATION that is not a name', async () => {
    const agent = await startAgent({
      name: 'specbad',
      profile: join(bed.world.profiles, 'specbad'),
      server: bed.server.url,
      token: await bed.world.createAgent('specbad'),
      env: { CAIRN_AGENT_SPECIALISATION: '../gaming' },
    });
    const [code] = (await once(agent.child, 'exit')) as [number | null];
    assert.notEqual(code, 0);
    assert.match(
      agent.lines.join('\n'),
      /CAIRN_AGENT_SPECIALISATION must be a specialisation name, not "\.\.\/gaming"/,
    );
  });
});
