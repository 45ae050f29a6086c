import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { access, mkdir, mkdtemp, readdir, readFile, readlink, realpath, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { startAgent } from '../helpers/agent-process.ts';
import { homeManagerPackage, profileTarget } from '../helpers/deploy-fixtures.ts';
import { useDeployTestbed } from '../helpers/deploy-testbed.ts';
import { buildPackages, RUN_TAG } from '../helpers/nix.ts';

/**
 * Home Manager generations of both formats. Fake: `activate` is a script that does what Home
 * Manager's does with the profile, the GC root and the home files (see homeManagerPackage), in a
 * temporary directory standing for the user's home (the real one would write to $HOME, the home
 * of the user running these tests).
 */
describe('Home Manager generations with and without gen-version', () => {
  const bed = useDeployTestbed();
  /** A home directory, a state directory (XDG_STATE_HOME) and a record file for one agent. */
  const place = async (name: string) => {
    const dir = await mkdtemp(join(tmpdir(), `cairn-hm-${name}-`));
    const home = join(dir, 'home');
    const state = join(dir, 'state');
    await mkdir(home);
    await mkdir(state);
    return { home, state, record: join(dir, 'record'), profile: join(bed.world.profiles, name) };
  };
  const exists = (p: string) =>
    access(p).then(
      () => true,
      () => false,
    );
  /** The record's lines without the USER and HOME the activation ran with. */
  const ran = async (record: string) =>
    (await readFile(record, 'utf8'))
      .trim()
      .split('\n')
      .map((l) => l.replace(/ USER=\S* HOME=\S*/, ''));
  /** The profile's generation links, as `nix-env --list-generations` counts them. */
  const generations = async (name: string) =>
    (await readdir(bed.world.profiles)).filter((f) => new RegExp(`^${name}-\\d+-link$`).test(f)).length;

  it('lets a legacy generation (no gen-version) read the old generation from the profile and set it itself', async () => {
    const { home, state, record, profile } = await place('hmlegacy');
    const pkg = (tag: string, files: Record<string, string>) =>
      homeManagerPackage(`hmlegacy-${tag}-${RUN_TAG}`, record, { home, profile, files });
    const paths = await bed.world.publish([
      pkg('a', { 'a.conf': 'a', 'common.conf': 'a' }),
      pkg('b', { 'b.conf': 'b', 'common.conf': 'b' }),
    ]);
    const a = paths.get(`hmlegacy-a-${RUN_TAG}`)!;
    const b = paths.get(`hmlegacy-b-${RUN_TAG}`)!;
    await bed.agent('hmlegacy', { env: { XDG_STATE_HOME: state } });
    assert.equal((await bed.activate({ agents: { hmlegacy: a } })).code, 0);
    const r = await bed.activate({ agents: { hmlegacy: b } });
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.match(
      r.stdout,
      /hmlegacy\s+\| a Home Manager generation without gen-version: its activate sets the profile/,
    );
    // The activation saw A as the old generation, so it removed A's a.conf: as `home-manager switch`.
    assert.deepEqual(await ran(record), [
      `${a} activate args=`,
      `${a} old=`,
      `${b} activate args=`,
      `${b} old=${a}`,
    ]);
    assert.equal(await exists(join(home, 'a.conf')), false);
    assert.equal(await readlink(join(home, 'b.conf')), join(b, 'home-files/b.conf'));
    assert.equal(await profileTarget(profile), b);
    // One generation per switch: the activation's, none of the agent's on top.
    assert.equal(await generations('hmlegacy'), 2);
  });

  it('sets the profile before a new-format generation (gen-version 1) and tells it so with --driver-version 1', async () => {
    const { home, state, record, profile } = await place('hmnew');
    const pkg = (tag: string, files: Record<string, string>) =>
      homeManagerPackage(`hmnew-${tag}-${RUN_TAG}`, record, { home, profile, files, driver: true });
    const paths = await bed.world.publish([pkg('a', { 'a.conf': 'a' }), pkg('b', { 'b.conf': 'b' })]);
    const a = paths.get(`hmnew-a-${RUN_TAG}`)!;
    const b = paths.get(`hmnew-b-${RUN_TAG}`)!;
    await bed.agent('hmnew', { env: { XDG_STATE_HOME: state } });
    assert.equal((await bed.activate({ agents: { hmnew: a } })).code, 0);
    const r = await bed.activate({ agents: { hmnew: b } });
    assert.equal(r.code, 0, r.stdout + r.stderr);
    // The old generation came from the GC root, as the profile already pointed at B.
    assert.deepEqual(await ran(record), [
      `${a} activate args=--driver-version 1`,
      `${a} old=`,
      `${b} activate args=--driver-version 1`,
      `${b} old=${a}`,
    ]);
    assert.equal(await exists(join(home, 'a.conf')), false);
    assert.equal(await readlink(join(home, 'b.conf')), join(b, 'home-files/b.conf'));
    assert.equal(await profileTarget(profile), b);
    assert.equal(await generations('hmnew'), 2);
  });

  it('rolls back to the generation the user runs (its GC root), not only the profile generation', async () => {
    const { home, state, record, profile } = await place('hmrun');
    const pkg = (tag: string, exit = 0) =>
      homeManagerPackage(`hmrun-${tag}-${RUN_TAG}`, record, {
        home,
        profile,
        files: { [`${tag}.conf`]: tag },
        driver: true,
        exit,
      });
    const paths = await bed.world.publish([pkg('a'), pkg('b', 1)]);
    const a = paths.get(`hmrun-a-${RUN_TAG}`)!;
    const b = paths.get(`hmrun-b-${RUN_TAG}`)!;
    await bed.agent('hmrun', { env: { XDG_STATE_HOME: state } });
    assert.equal((await bed.activate({ agents: { hmrun: a } })).code, 0);
    // The user activated another generation X by hand (its activate, without a new profile generation).
    const x = (await buildPackages([pkg('x')])).values().next().value!;
    const hand = spawnSync(join(x, 'activate'), ['--driver-version', '1'], {
      env: { ...process.env, XDG_STATE_HOME: state },
    });
    assert.equal(hand.status, 0, String(hand.stderr));

    const r = await bed.activate({ agents: { hmrun: b } });
    assert.equal(r.code, 1, r.stdout + r.stderr);
    assert.match(r.stdout, /hmrun\s+rolled-back/);
    assert.equal(await realpath(join(state, 'home-manager/gcroots/current-home')), x);
    assert.equal(await readlink(join(home, 'x.conf')), join(x, 'home-files/x.conf'));
    assert.equal(await profileTarget(profile), x);
    assert.deepEqual(
      (await ran(record)).filter((l) => l.includes(' activate ')),
      [
        `${a} activate args=--driver-version 1`,
        `${x} activate args=--driver-version 1`,
        `${b} activate args=--driver-version 1`,
        `${x} activate args=--driver-version 1`,
      ],
    );
  });

  it('fails on a file in the way, and with HOME_MANAGER_BACKUP_EXT moves it aside instead', async () => {
    const without = await place('hmcollide');
    const withExt = await place('hmbackup');
    const pkg = (p: typeof without) =>
      homeManagerPackage(`${p.profile.split('/').at(-1)}-${RUN_TAG}`, p.record, {
        home: p.home,
        profile: p.profile,
        files: { 'c.conf': 'managed' },
        driver: true,
      });
    const paths = await bed.world.publish([pkg(without), pkg(withExt)]);
    for (const p of [without, withExt]) await writeFile(join(p.home, 'c.conf'), 'hand-written');

    await bed.agent('hmcollide', { env: { XDG_STATE_HOME: without.state } });
    const failed = await bed.activate({ agents: { hmcollide: paths.get(`hmcollide-${RUN_TAG}`)! } });
    assert.equal(failed.code, 1, failed.stdout + failed.stderr);
    assert.ok(
      failed.stdout.includes(
        `activate exited with 1: Existing file '${join(without.home, 'c.conf')}' would be clobbered`,
      ),
      failed.stdout,
    );
    assert.equal(await readFile(join(without.home, 'c.conf'), 'utf8'), 'hand-written');

    // `env` execs the agent: HOME_MANAGER_BACKUP_EXT in its environment, as the module sets it.
    await bed.agent('hmbackup', {
      env: { XDG_STATE_HOME: withExt.state, HOME_MANAGER_BACKUP_EXT: 'backup' },
    });
    const target = paths.get(`hmbackup-${RUN_TAG}`)!;
    const ok = await bed.activate({ agents: { hmbackup: target } });
    assert.equal(ok.code, 0, ok.stdout + ok.stderr);
    assert.match(ok.stdout, /will be moved to '.*c\.conf\.backup'/);
    assert.equal(await readFile(join(withExt.home, 'c.conf.backup'), 'utf8'), 'hand-written');
    assert.equal(await readlink(join(withExt.home, 'c.conf')), join(target, 'home-files/c.conf'));
  });

  it('refuses to start with a HOME_MANAGER_BACKUP_EXT that is not a plain extension', async () => {
    const agent = await startAgent({
      name: 'hmbadext',
      profile: join(bed.world.profiles, 'hmbadext'),
      server: bed.server.url,
      token: await bed.world.createAgent('hmbadext'),
      env: { HOME_MANAGER_BACKUP_EXT: '../elsewhere' },
    });
    const [code] = (await once(agent.child, 'exit')) as [number | null];
    assert.notEqual(code, 0);
    assert.match(
      agent.lines.join('\n'),
      /HOME_MANAGER_BACKUP_EXT must be a file name extension .*not "\.\.\/elsewhere"/,
    );
  });
});
