import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { startDetachedActivation, waitForDetachedActivation } from '../../src/agent/detached-activation.ts';
import { activationUnitName } from '../../src/agent/transient-unit.ts';

/** The pid of a process that has ended (and was reaped). */
async function deadPid(): Promise<number> {
  const child = spawn('/bin/sh', ['-c', 'exit 0']);
  await once(child, 'exit');
  return child.pid!;
}

describe('waitForDetachedActivation: only a complete status line is an outcome', () => {
  let dir: string;
  let n = 0;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'cairn-detached-'));
  });
  after(() => rm(dir, { recursive: true, force: true }));
  const record = async (status: string | undefined, pid: number | null) => {
    n++;
    const r = {
      storePath: '/nix/store/x',
      logFile: join(dir, `${n}.log`),
      statusFile: join(dir, `${n}.status`),
      pid,
    };
    await writeFile(r.logFile, 'switching\n');
    if (status !== undefined) await writeFile(r.statusFile, status);
    return r;
  };
  const wait = (r: Awaited<ReturnType<typeof record>>) => waitForDetachedActivation(r, () => {});

  it('reads a complete status', async () => {
    const s = await wait(await record('4 switch-to-configuration\n', await deadPid()));
    assert.deepEqual([s.code, s.label, s.unknown], [4, 'switch-to-configuration', undefined]);
  });

  it('never reads an empty or a partial status as exit 0', async () => {
    const empty = await wait(await record('', await deadPid()));
    assert.equal(empty.code, -1);
    assert.match(empty.unknown!, /outcome is unknown: its status file .* is empty/);
    const partial = await wait(await record('0', await deadPid()));
    assert.equal(partial.code, -1);
    assert.match(partial.unknown!, /outcome is unknown: its status file .* is incomplete/);
  });

  it('with no recorded pid, fails at once on an empty status rather than waiting', async () => {
    const s = await wait(await record('', null));
    assert.match(s.unknown!, /is empty/);
  });

  it('runs an activation to a complete, flushed status, taking the pid from the pid file when none was recorded', async () => {
    n++;
    const r = {
      storePath: '/nix/store/x',
      logFile: join(dir, `${n}.log`),
      statusFile: join(dir, `${n}.status`),
      pid: null,
    };
    await startDetachedActivation(
      {
        commands: [{ label: 'activate', argv: ['/bin/sh', '-c', 'echo hello; sleep 0.3; exit 3'] }],
        env: { PATH: process.env.PATH },
      },
      r,
    );
    const lines: string[] = [];
    const s = await waitForDetachedActivation(r, (l) => lines.push(l));
    assert.deepEqual([s.code, s.label, s.lastLine], [3, 'activate', 'hello']);
    assert.ok(lines.includes('hello'));
  });
});

describe('waitForDetachedActivation: an activation in a transient unit', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'cairn-unit-wait-'));
  });
  after(() => rm(dir, { recursive: true, force: true }));

  it('fails, saying the machine rebooted, when the boot id is not the one the unit was started in', async () => {
    const r = {
      storePath: '/nix/store/x',
      logFile: join(dir, 'reboot.log'),
      statusFile: join(dir, 'reboot.status'),
      pid: null,
      unit: { name: 'cairn-activation-7-1.service', bootId: 'a-boot-that-is-not-this-one' },
    };
    await writeFile(r.logFile, 'switching\n');
    await writeFile(`${r.statusFile}.pid`, '1\n');
    // No systemctl is needed: the boot id alone says the unit cannot still run.
    const s = await waitForDetachedActivation(r, () => {}, { env: { PATH: '/nonexistent' } });
    assert.equal(s.code, -1);
    assert.match(
      s.unknown!,
      /^the machine rebooted during the activation: it left no exit status, and its unit cairn-activation-7-1\.service ended with the boot it ran in \(boot id a-boot-that-is-not-this-one, now \S+\)$/,
    );
  });

  it('still takes a complete status written before the reboot', async () => {
    const r = {
      storePath: '/nix/store/x',
      logFile: join(dir, 'done.log'),
      statusFile: join(dir, 'done.status'),
      pid: null,
      unit: { name: 'cairn-activation-7-2.service', bootId: 'a-boot-that-is-not-this-one' },
    };
    await writeFile(r.logFile, 'switching\n');
    await writeFile(r.statusFile, '0 -\n');
    const s = await waitForDetachedActivation(r, () => {}, { env: { PATH: '/nonexistent' } });
    assert.deepEqual([s.code, s.unknown], [0, undefined]);
  });
});

describe('activationUnitName', () => {
  it('derives a valid unit name from any deployment id', () => {
    assert.equal(activationUnitName('42', '1700000000000-7'), 'cairn-activation-42-1700000000000-7.service');
    assert.equal(activationUnitName('a/b c$', 'x'), 'cairn-activation-a_b_c_-x.service');
  });
});
