import assert from 'node:assert/strict';
import { mkdtemp, readFile, readlink } from 'node:fs/promises';
import { tmpdir, userInfo } from 'node:os';
import { basename, join } from 'node:path';
import { before, describe, it } from 'node:test';
import { darwinPackage, homeManagerPackage, profileTarget } from '../helpers/deploy-fixtures.ts';
import { useDeployTestbed } from '../helpers/deploy-testbed.ts';
import { RUN_TAG } from '../helpers/nix.ts';

/** The generation a profile's link names: `<profile>-<n>-link` -> n. */
async function generation(profile: string): Promise<number> {
  const m = /-(\d+)-link$/.exec(await readlink(profile));
  assert.ok(m, `${profile} is not a profile generation link`);
  return Number(m[1]);
}

describe('activation of nix-darwin and Home Manager closures', () => {
  const bed = useDeployTestbed();
  const { activate } = bed;
  /** A HOME unlike the user's own, as `sudo` on macOS leaves it: activation must not inherit it. */
  let foreignHome: string;
  /** Home Manager's state (its current-home GC root): not the real user's, whose generation a rollback would activate. */
  let stateHome: string;
  before(async () => {
    foreignHome = await mkdtemp(join(tmpdir(), 'cairn-foreign-home-'));
    stateHome = await mkdtemp(join(tmpdir(), 'cairn-state-home-'));
  });
  const me = userInfo();
  // `env` execs the agent, so signals still reach it. The primary user a legacy nix-darwin
  // activate-user runs as is the one the tests run as (root here).
  const agent = (name: string) =>
    bed.agent(name, {
      wrap: ['env', `HOME=${foreignHome}`, 'USER=somebody-else'],
      env: { CAIRN_AGENT_PRIMARY_USER: me.username, XDG_STATE_HOME: stateHome },
    });

  it('activates nix-darwin with activate-user then activate, and rolls back a failing one by re-running both', async () => {
    const record = join(bed.world.profiles, 'darwin-record');
    const paths = await bed.world.publish([
      darwinPackage(`darwin-good-${RUN_TAG}`, record),
      darwinPackage(`darwin-bad-${RUN_TAG}`, record, { exit: 2 }),
    ]);
    const good = paths.get(`darwin-good-${RUN_TAG}`)!;
    const bad = paths.get(`darwin-bad-${RUN_TAG}`)!;
    await agent('mac1');
    const profile = join(bed.world.profiles, 'mac1');

    const first = await activate({ agents: { mac1: good } });
    assert.equal(first.code, 0, first.stdout + first.stderr);
    assert.match(first.stdout, /mac1\s+\| kind: nix-darwin/);
    assert.match(first.stdout, /mac1\s+\| activating nix-darwin/);
    assert.match(first.stdout, /mac1\s+succeeded/);
    assert.equal(await profileTarget(profile), good);
    assert.equal(await generation(profile), 1);

    const second = await activate({ agents: { mac1: bad } });
    assert.equal(second.code, 1, second.stdout + second.stderr);
    assert.match(second.stdout, /mac1\s+\| == rolled-back: activate exited with 2: activating nix-darwin/);
    assert.match(second.stdout, /mac1\s+rolled-back/);
    // Generation 2 was the failed one; the rollback set the profile to the good path again.
    assert.equal(await profileTarget(profile), good);
    assert.equal(await generation(profile), 3);
    assert.equal(await readlink(join(bed.world.profiles, 'mac1-2-link')), bad);

    const ran = (await readFile(record, 'utf8')).trim().split('\n');
    assert.deepEqual(
      ran.map((l) => l.split(' ').slice(0, 2).join(' ')),
      [
        `${good} activate-user`,
        `${good} activate`,
        `${bad} activate-user`,
        `${bad} activate`,
        `${good} activate-user`,
        `${good} activate`,
      ],
    );
  });

  it("runs nix-darwin's activation with the home directory of the user the agent runs as, not an inherited HOME", async () => {
    const record = join(bed.world.profiles, 'darwin-home-record');
    const paths = await bed.world.publish([darwinPackage(`darwin-home-${RUN_TAG}`, record)]);
    const path = paths.get(`darwin-home-${RUN_TAG}`)!;
    await agent('mac2');
    const r = await activate({ agents: { mac2: path } });
    assert.equal(r.code, 0, r.stdout + r.stderr);
    const ran = (await readFile(record, 'utf8')).trim().split('\n');
    assert.deepEqual(ran, [
      `${path} activate-user user=${me.username} HOME=${me.homedir}`,
      `${path} activate HOME=${me.homedir}`,
    ]);
  });

  it("skips nix-darwin's deprecated activate-user stub and runs only activate", async () => {
    const record = join(bed.world.profiles, 'darwin-stub-record');
    const paths = await bed.world.publish([
      darwinPackage(`darwin-stub-${RUN_TAG}`, record, { userStub: true }),
    ]);
    const path = paths.get(`darwin-stub-${RUN_TAG}`)!;
    await agent('mac3');
    const r = await activate({ agents: { mac3: path } });
    assert.equal(r.code, 0, r.stdout + r.stderr);
    const ran = (await readFile(record, 'utf8')).trim().split('\n');
    assert.deepEqual(
      ran.map((l) => l.split(' ').slice(0, 2).join(' ')),
      [`${path} activate`],
    );
    assert.equal(await profileTarget(join(bed.world.profiles, 'mac3')), path);
  });

  it('activates Home Manager as the user with its USER and HOME, passes --driver-version 1 only to generations with a gen-version, and rolls back', async () => {
    const record = join(bed.world.profiles, 'hm-record');
    const paths = await bed.world.publish([
      homeManagerPackage(`hm-legacy-${RUN_TAG}`, record),
      homeManagerPackage(`hm-driver-${RUN_TAG}`, record, { driver: true }),
      homeManagerPackage(`hm-bad-${RUN_TAG}`, record, { exit: 1, driver: true }),
    ]);
    const legacy = paths.get(`hm-legacy-${RUN_TAG}`)!;
    const driver = paths.get(`hm-driver-${RUN_TAG}`)!;
    const bad = paths.get(`hm-bad-${RUN_TAG}`)!;
    await agent('alice-home');
    const profile = join(bed.world.profiles, 'alice-home');
    const as = `USER=${me.username} HOME=${me.homedir}`;

    const first = await activate({ agents: { 'alice-home': legacy } });
    assert.equal(first.code, 0, first.stdout + first.stderr);
    assert.match(first.stdout, /alice-home\s+\| kind: home-manager/);
    assert.match(first.stdout, /alice-home\s+succeeded/);
    const second = await activate({ agents: { 'alice-home': driver } });
    assert.equal(second.code, 0, second.stdout + second.stderr);
    assert.equal(await profileTarget(profile), driver);
    assert.equal(await generation(profile), 2);

    const third = await activate({ agents: { 'alice-home': bad } });
    assert.equal(third.code, 1, third.stdout + third.stderr);
    assert.match(
      third.stdout,
      /alice-home\s+\| == rolled-back: activate exited with 1: activating home-manager/,
    );
    assert.equal(await profileTarget(profile), driver);
    assert.equal(await generation(profile), 4);
    assert.equal(basename(await readlink(join(bed.world.profiles, 'alice-home-3-link'))), basename(bad));

    assert.deepEqual((await readFile(record, 'utf8')).trim().split('\n'), [
      `${legacy} activate ${as} args=`,
      `${driver} activate ${as} args=--driver-version 1`,
      `${bad} activate ${as} args=--driver-version 1`,
      `${driver} activate ${as} args=--driver-version 1`,
    ]);
  });
});
