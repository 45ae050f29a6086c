import assert from 'node:assert/strict';
import { mkdtemp, readdir, readFile, realpath, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { writeDeployJson, writeScript } from '../helpers/deploy-fixtures.ts';
import { useDeployTestbed } from '../helpers/deploy-testbed.ts';
import { fakeSystemd } from '../helpers/fake-systemd.ts';
import { RUN_TAG } from '../helpers/nix.ts';
import { cli } from '../helpers/server.ts';

/**
 * Where systemd is the init system, the NixOS switch runs in a transient unit, and an agent
 * restarted during it re-attaches by the unit's name. This machine has no systemd as PID 1, so
 * `systemd-run` and `systemctl` are fakes (test/helpers/fake-systemd.ts) that start the unit's
 * command in its own session with only the `-E` variables, and report it active while it runs
 * and gone (collected) once it ended, as the real ones do.
 */
describe('the NixOS switch in a transient systemd unit', () => {
  const bed = useDeployTestbed();

  /**
   * A NixOS closure whose switch dumps its environment, kills the agent, and then either
   * finishes (pointing the running-system link at itself, exit 0) or kills its unit's main
   * process so that the unit ends without a status (`vanish`).
   */
  const system = (name: string, dir: string, vanish: boolean) => ({
    name,
    script: [
      'mkdir -p $out/bin',
      'echo 24.05 > $out/nixos-version',
      writeScript(
        'bin/switch-to-configuration',
        [
          'top=$(dirname "$(dirname "$0")")',
          `env > ${dir}/switch.env`,
          'echo switching to configuration',
          `kill -9 "$(cat ${dir}/agent.pid)"`,
          vanish ? 'kill -9 "$PPID"; exit 0' : 'sleep 1',
          `ln -sfn "$top" ${dir}/current-system`,
          'exit 0',
        ].join('\n'),
      ),
    ].join('\n'),
  });

  const run = async (agent: string, vanish: boolean) => {
    const dir = await mkdtemp(join(tmpdir(), `cairn-unit-${agent}-`));
    const stateDir = await mkdtemp(join(tmpdir(), `cairn-unit-state-${agent}-`));
    const fake = await fakeSystemd(join(dir, 'systemd'), process.env.PATH ?? '/usr/bin:/bin');
    const pkg = `unit-${agent}-${RUN_TAG}`;
    const paths = await bed.world.publish([system(pkg, dir, vanish)]);
    const path = paths.get(pkg)!;
    const token = await bed.world.createAgent(agent);
    const env = { ...fake.env, CAIRN_AGENT_CURRENT_SYSTEM: join(dir, 'current-system') };
    const first = await bed.agent(agent, { token, stateDir, env });
    await writeFile(join(dir, 'agent.pid'), String(first.child.pid));
    const f = await writeDeployJson(bed.world.profiles, { agents: { [agent]: path } });
    const activation = cli(['deploy', 'activate', f, '--timeout', '90s'], bed.world.env);
    await Promise.race([
      new Promise<void>((resolve) => first.child.once('exit', () => resolve())),
      new Promise((_, reject) =>
        setTimeout(
          () => reject(new Error(`the switch did not kill the agent:\n${first.lines.join('\n')}`)),
          30_000,
        ),
      ),
    ]);
    assert.equal(first.child.signalCode, 'SIGKILL');
    const units = (await readdir(fake.state)).filter((f) => f.endsWith('.args'));
    assert.equal(units.length, 1, units.join(' '));
    const unit = units[0]!.replace(/\.args$/, '');
    const second = await bed.agent(agent, { token, stateDir, env });
    await second.waitFor(/was interrupted at activate; finishing it first/);
    const r = await activation;
    const quoted = unit.replaceAll('.', '\\.');
    assert.match(
      r.stdout,
      new RegExp(
        `re-attaching to the activation of \\S+ started before the agent restarted, by its unit ${quoted}`,
      ),
    );
    return { r, unit, fake, dir, path, token };
  };

  it('runs the switch in a unit named after the deployment, with the clean environment only, and picks up its result by unit name after the agent was killed', async () => {
    const { r, unit, fake, dir, path, token } = await run('unitok', false);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /unitok\s+succeeded/);
    assert.match(unit, /^cairn-activation-[A-Za-z0-9_.-]+\.service$/);
    const args = await fake.args(unit);
    // nixos-rebuild's flags, without --pipe: the output goes to the agent's log file.
    for (const flag of ['--collect', '--no-ask-password', '--quiet', '--service-type=exec', `--unit=${unit}`])
      assert.ok(args.includes(flag), `systemd-run lacks ${flag}: ${args.join(' ')}`);
    const passed = args.flatMap((a, i) => (a === '-E' ? [args[i + 1]!] : []));
    assert.ok(passed.includes('NIXOS_INSTALL_BOOTLOADER') && passed.includes('PATH'), passed.join(' '));
    assert.deepEqual(
      passed.filter((v) => v.startsWith('CAIRN_')),
      [],
    );
    const env = await readFile(join(dir, 'switch.env'), 'utf8');
    assert.ok(env.split('\n').includes('NIXOS_INSTALL_BOOTLOADER=0'), env);
    assert.deepEqual(
      env.split('\n').filter((l) => l.startsWith('CAIRN_')),
      [],
    );
    assert.ok(!env.includes(token), "the agent's token reached the switch");
    // The restarted agent asked systemd about the unit by its name.
    assert.ok((await fake.calls()).some((c) => c.startsWith('show') && c.endsWith(unit)));
    // The switch ran to its end in the unit while no agent was there.
    assert.equal(await realpath(join(dir, 'current-system')), path);
  });

  it('marks the deployment failed, with a reason naming the unit, when the unit is gone without a status', async () => {
    const { r, unit } = await run('unitgone', true);
    assert.equal(r.code, 1, r.stdout + r.stderr);
    assert.match(
      r.stdout,
      new RegExp(
        `unitgone\\s+\\| == failed: the activation's unit ${unit.replaceAll('.', '\\.')} is gone and left no exit status \\(it was stopped or killed\\)`,
      ),
    );
    assert.match(r.stdout, /unitgone\s+failed/);
  });
});
