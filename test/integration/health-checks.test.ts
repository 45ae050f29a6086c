import assert from 'node:assert/strict';
import { chmod, mkdtemp, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { before, describe, it } from 'node:test';
import { plainPackage, profileTarget, writeScript } from '../helpers/deploy-fixtures.ts';
import { useDeployTestbed } from '../helpers/deploy-testbed.ts';
import { RUN_TAG } from '../helpers/nix.ts';

/**
 * A plain profile whose `bin/activate` writes the time it ran to `<stamps>.activated` and whose
 * `bin/check` appends the time of each attempt to `<stamps>.checked`.
 */
function timedPackage(name: string, stamps: string) {
  return {
    name,
    script: [
      writeScript('bin/activate', `date +%s.%N > ${stamps}.activated\necho activated ${name}`),
      writeScript('bin/check', `date +%s.%N >> ${stamps}.checked\necho healthy`),
    ].join('\n'),
  };
}

async function times(file: string): Promise<number[]> {
  return (await readFile(file, 'utf8')).trim().split('\n').map(Number);
}

describe('health checks: systemd units, timeoutSeconds and graceSeconds', () => {
  const bed = useDeployTestbed();
  const { activate } = bed;
  let fakeBin: string;
  before(async () => {
    // This machine runs no systemd (the test runs in a container), so a real `systemctl
    // is-active` cannot answer. A fake `systemctl` first on the agent's PATH stands in for it,
    // only for that reason: it records how it was called and answers as systemctl does (one
    // state per unit; exit 0 when all are active, 3 otherwise). Units named broken* are failed.
    fakeBin = await mkdtemp(join(tmpdir(), 'cairn-fake-systemctl-'));
    await writeFile(
      join(fakeBin, 'systemctl'),
      [
        '#!/bin/sh',
        `echo "$*" >> ${join(fakeBin, 'calls')}`,
        '[ "$1" = is-active ] || exit 1',
        'shift',
        'rc=0',
        'for u in "$@"; do case "$u" in broken*) echo failed; rc=3;; *) echo active;; esac; done',
        'exit $rc',
        '',
      ].join('\n'),
    );
    await chmod(join(fakeBin, 'systemctl'), 0o755);
  });
  const agent = (name: string, wrap?: string[]) => bed.agent(name, wrap ? { wrap } : {});

  it('passes a systemd check when every unit is active and rolls back when one is not', async () => {
    const paths = await bed.world.publish([
      plainPackage(`sd-good-${RUN_TAG}`),
      plainPackage(`sd-next-${RUN_TAG}`),
    ]);
    const good = paths.get(`sd-good-${RUN_TAG}`)!;
    const next = paths.get(`sd-next-${RUN_TAG}`)!;
    // `env` execs the agent, so signals still reach it.
    await agent('sd1', ['env', `PATH=${fakeBin}:${process.env.PATH}`]);
    const profile = join(bed.world.profiles, 'sd1');

    const ok = await activate({
      agents: { sd1: good },
      healthChecks: { sd1: [{ systemd: ['sshd.service', 'nginx.service'], retries: 0 }] },
    });
    assert.equal(ok.code, 0, ok.stdout + ok.stderr);
    assert.match(ok.stdout, /sd1\s+\| systemd check sshd\.service nginx\.service: healthy/);
    assert.equal(await profileTarget(profile), good);

    const bad = await activate({
      agents: { sd1: next },
      healthChecks: {
        sd1: [{ systemd: ['nginx.service', 'broken-app.service'], retries: 1, intervalSeconds: 0 }],
      },
    });
    assert.equal(bad.code, 1, bad.stdout + bad.stderr);
    assert.match(
      bad.stdout,
      /sd1\s+\| == rolled-back: systemd check nginx\.service broken-app\.service failed after 2 attempt\(s\): exited with 3: failed/,
    );
    assert.equal(await profileTarget(profile), good);
    assert.deepEqual((await readFile(join(fakeBin, 'calls'), 'utf8')).trim().split('\n'), [
      'is-active sshd.service nginx.service',
      'is-active nginx.service broken-app.service',
      'is-active nginx.service broken-app.service',
    ]);
  });

  /**
   * Publishes a good closure and one whose `bin/slow` check records when each attempt started
   * (and the pid of the `sleep` it runs) and sleeps 30 s in a child process, as a shell script
   * that runs curl or psql would; deploys the good one to a new agent. Returns both paths.
   */
  const slowWorld = async (name: string) => {
    const dir = await mkdtemp(join(tmpdir(), 'cairn-slow-'));
    const paths = await bed.world.publish([
      plainPackage(`${name}-good-${RUN_TAG}`),
      {
        name: `${name}-check-${RUN_TAG}`,
        script: writeScript(
          'bin/slow',
          `date +%s.%N >> ${dir}/started\necho waiting for the service\nsleep 30 &\necho $! >> ${dir}/pids\nwait\necho answered`,
        ),
      },
    ]);
    const good = paths.get(`${name}-good-${RUN_TAG}`)!;
    await agent(name);
    assert.equal((await activate({ agents: { [name]: good } })).code, 0);
    return { dir, good, slow: paths.get(`${name}-check-${RUN_TAG}`)! };
  };
  const slowCheck = (retries: number) => ({
    '*': [{ command: ['bin/slow'], timeoutSeconds: 2, retries, intervalSeconds: 0 }],
  });

  it('fails a command check that runs longer than timeoutSeconds, cutting each attempt at timeoutSeconds', async () => {
    const { dir, good, slow } = await slowWorld('slow1');
    const r = await activate({ agents: { slow1: slow }, healthChecks: slowCheck(1) });
    const ended = Date.now() / 1000;
    assert.equal(r.code, 1, r.stdout + r.stderr);
    assert.match(
      r.stdout,
      /slow1\s+\| == rolled-back: command check bin\/slow failed after 2 attempt\(s\): timed out after 2s/,
    );
    assert.equal(await profileTarget(join(bed.world.profiles, 'slow1')), good);
    const [first, second] = await times(join(dir, 'started'));
    // The second attempt started when the first was cut, about 2 s in, not after its 30 s sleep.
    const apart = second! - first!;
    assert.ok(apart >= 1.9 && apart < 10, `attempts started ${apart.toFixed(2)}s apart, expected about 2s`);
    assert.ok(
      ended - second! < 15,
      `the deployment ended ${(ended - second!).toFixed(1)}s after the last attempt`,
    );
  });

  it('says what a timed-out check printed last, not that it could not run', async () => {
    const { slow } = await slowWorld('slow2');
    const r = await activate({ agents: { slow2: slow }, healthChecks: slowCheck(0) });
    assert.equal(r.code, 1, r.stdout + r.stderr);
    assert.match(
      r.stdout,
      /slow2\s+\| == rolled-back: command check bin\/slow failed after 1 attempt\(s\): timed out after 2s: waiting for the service\n/,
    );
    assert.doesNotMatch(r.stdout, /cannot run/);
  });

  it("stops a timed-out check's child processes", async () => {
    const { dir, slow } = await slowWorld('slow3');
    const r = await activate({ agents: { slow3: slow }, healthChecks: slowCheck(0) });
    assert.equal(r.code, 1, r.stdout + r.stderr);
    const [pid] = await times(join(dir, 'pids'));
    // A killed child that nobody reaps stays a zombie (state Z), which is not running.
    const running = async () => {
      const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '');
      return stat !== '' && !/^\S+ \(.*\) Z /.test(stat);
    };
    const deadline = Date.now() + 3000;
    let alive = await running();
    while (alive && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 200));
      alive = await running();
    }
    assert.equal(alive, false, `the check's child (pid ${pid}) still runs after the check timed out`);
  });

  it('waits graceSeconds after activation before the first attempt', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'cairn-grace-'));
    const paths = await bed.world.publish([
      timedPackage(`grace-none-${RUN_TAG}`, join(dir, 'none')),
      timedPackage(`grace-three-${RUN_TAG}`, join(dir, 'three')),
    ]);
    await agent('grace1');
    const check = (graceSeconds: number) => [{ command: ['bin/check'], graceSeconds, retries: 0 }];

    const none = await activate({
      agents: { grace1: paths.get(`grace-none-${RUN_TAG}`)! },
      healthChecks: { '*': check(0) },
    });
    assert.equal(none.code, 0, none.stdout + none.stderr);
    assert.doesNotMatch(none.stdout, /grace period/);
    const three = await activate({
      agents: { grace1: paths.get(`grace-three-${RUN_TAG}`)! },
      healthChecks: { '*': check(3) },
    });
    assert.equal(three.code, 0, three.stdout + three.stderr);
    assert.match(three.stdout, /grace1\s+\| command check bin\/check: waiting 3s grace period/);
    assert.match(three.stdout, /grace1\s+succeeded/);

    const gap = async (stamps: string) => {
      const [activated] = await times(`${stamps}.activated`);
      const checked = await times(`${stamps}.checked`);
      assert.equal(checked.length, 1);
      return checked[0]! - activated!;
    };
    const withoutGrace = await gap(join(dir, 'none'));
    const withGrace = await gap(join(dir, 'three'));
    assert.ok(withGrace >= 2.95, `first attempt ${withGrace.toFixed(2)}s after activation, expected >= 3s`);
    assert.ok(withGrace < 20, `first attempt ${withGrace.toFixed(2)}s after activation, expected about 3s`);
    assert.ok(
      withGrace - withoutGrace > 2,
      `grace 3 s: ${withGrace.toFixed(2)}s; no grace: ${withoutGrace.toFixed(2)}s`,
    );
  });
});
