import assert from 'node:assert/strict';
import { once } from 'node:events';
import { access, mkdtemp, readFile, realpath, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { startAgent } from '../helpers/agent-process.ts';
import { nixosPackage, profileTarget, writeDeployJson, writeScript } from '../helpers/deploy-fixtures.ts';
import { useDeployTestbed } from '../helpers/deploy-testbed.ts';
import { buildPackages, RUN_TAG } from '../helpers/nix.ts';
import { cli } from '../helpers/server.ts';

/**
 * NixOS switches whose fake switch-to-configuration behaves as the real one in each case: exit
 * 100 installs for the next boot without activating, a pre-switch check refuses the switch, a
 * switch that "succeeds" without /run/current-system following.
 */
describe('NixOS switch outcomes: exit 100, pre-switch checks, the running system', () => {
  const bed = useDeployTestbed();
  const { activate } = bed;
  /** The agent's deployments as `cairn deploy list --json` shows them, oldest first. */
  const deployments = async (agentName: string) => {
    const r = await cli(['deploy', 'list', '--agent', agentName, '--json'], bed.world.env);
    assert.equal(r.code, 0, r.stderr);
    return (
      JSON.parse(r.stdout) as Array<{
        state: string;
        step: string | null;
        rebootRequired: boolean;
        reason: string | null;
      }>
    )
      .slice()
      .reverse();
  };
  /** A directory for one test's record file and current-system link. */
  const place = async (name: string) => {
    const dir = await mkdtemp(join(tmpdir(), `cairn-switch-${name}-`));
    return { dir, record: join(dir, 'record'), link: join(dir, 'current-system') };
  };
  const exists = (p: string) =>
    access(p).then(
      () => true,
      () => false,
    );

  it('installs a switch that exits 100 for the next boot: failed, reboot required, no health checks', async () => {
    const { dir, record, link } = await place('exit100');
    const checked = join(dir, 'health-check-ran');
    const exit100 = nixosPackage(`sw100-new-${RUN_TAG}`, record, { exit: 100, currentSystem: link });
    const paths = await bed.world.publish([
      nixosPackage(`sw100-base-${RUN_TAG}`, record, { currentSystem: link }),
      // With a health check that records that it ran, which it must not.
      { ...exit100, script: `${exit100.script}\n${writeScript('bin/check', `touch ${checked}`)}` },
    ]);
    const base = paths.get(`sw100-base-${RUN_TAG}`)!;
    const next = paths.get(`sw100-new-${RUN_TAG}`)!;
    await bed.agent('sw100', { env: { CAIRN_AGENT_CURRENT_SYSTEM: link } });
    assert.equal((await activate({ agents: { sw100: base } })).code, 0);

    const r = await activate({
      agents: { sw100: next },
      healthChecks: { '*': [{ command: ['bin/check'], retries: 0 }] },
    });
    assert.equal(r.code, 1, r.stdout + r.stderr);
    assert.match(
      r.stdout,
      /sw100\s+failed\s+.*installed for the next boot; reboot required: the init system changed \(exit 100\); not activated, health checks not run; reboot required/,
    );
    const last = (await deployments('sw100')).at(-1)!;
    assert.deepEqual(last, {
      ...last,
      state: 'failed',
      step: 'activate',
      rebootRequired: true,
      reason:
        'installed for the next boot; reboot required: the init system changed (exit 100); not activated, health checks not run',
    });
    // The new system is the boot default; the machine still runs the old one, and nothing checked either.
    assert.equal(await profileTarget(join(bed.world.profiles, 'sw100')), next);
    assert.equal(await realpath(link), base);
    assert.equal(await exists(checked), false);
    assert.equal(await readFile(record, 'utf8'), `${base} switch\n${next} switch\n`);
  });

  it('rolls back a switch that exits 0 while /run/current-system stays on the old system', async () => {
    const { record, link } = await place('stale');
    const paths = await bed.world.publish([
      nixosPackage(`swstale-base-${RUN_TAG}`, record, { currentSystem: link }),
      // Exits 0 but never points the link at itself: the switch did not take effect.
      nixosPackage(`swstale-new-${RUN_TAG}`, record),
    ]);
    const base = paths.get(`swstale-base-${RUN_TAG}`)!;
    const next = paths.get(`swstale-new-${RUN_TAG}`)!;
    await bed.agent('swstale', { env: { CAIRN_AGENT_CURRENT_SYSTEM: link } });
    assert.equal((await activate({ agents: { swstale: base } })).code, 0);
    const r = await activate({ agents: { swstale: next } });
    assert.equal(r.code, 1, r.stdout + r.stderr);
    assert.ok(
      r.stdout.includes(
        `swstale | == rolled-back: switch-to-configuration exited with 0 but ${link} is ${base}, not the new configuration: the switch did not take effect`,
      ),
      r.stdout,
    );
    assert.equal(await profileTarget(join(bed.world.profiles, 'swstale')), base);
    assert.equal(await readFile(record, 'utf8'), `${base} switch\n${next} switch\n${base} switch\n`);
  });

  it('rolls back a switch refused by a pre-switch check, naming the check', async () => {
    const { record, link } = await place('precheck');
    const paths = await bed.world.publish([
      nixosPackage(`swpre-base-${RUN_TAG}`, record, { currentSystem: link }),
      nixosPackage(`swpre-new-${RUN_TAG}`, record, {
        currentSystem: link,
        preSwitchCheck: 'switchInhibitors',
      }),
    ]);
    const base = paths.get(`swpre-base-${RUN_TAG}`)!;
    const next = paths.get(`swpre-new-${RUN_TAG}`)!;
    await bed.agent('swpre', { env: { CAIRN_AGENT_CURRENT_SYSTEM: link } });
    assert.equal((await activate({ agents: { swpre: base } })).code, 0);
    const r = await activate({ agents: { swpre: next } });
    assert.equal(r.code, 1, r.stdout + r.stderr);
    assert.match(
      r.stdout,
      /swpre\s+\| == rolled-back: switch-to-configuration refused to switch: pre-switch checks failed \(exit 1\): Pre-switch check 'switchInhibitors' failed; nothing was activated and the bootloader was not changed/,
    );
    assert.equal(await profileTarget(join(bed.world.profiles, 'swpre')), base);
    assert.equal(await realpath(link), base);
    assert.equal(await readFile(record, 'utf8'), `${base} switch\n${next} switch\n${base} switch\n`);
  });

  it('with CAIRN_AGENT_PRE_SWITCH_CHECKS=boot, installs a refused switch for the next boot instead', async () => {
    const { record, link } = await place('preboot');
    const paths = await bed.world.publish([
      nixosPackage(`swboot-base-${RUN_TAG}`, record, { currentSystem: link }),
      nixosPackage(`swboot-new-${RUN_TAG}`, record, {
        currentSystem: link,
        preSwitchCheck: 'switchInhibitors',
      }),
    ]);
    const base = paths.get(`swboot-base-${RUN_TAG}`)!;
    const next = paths.get(`swboot-new-${RUN_TAG}`)!;
    await bed.agent('swboot', {
      env: { CAIRN_AGENT_CURRENT_SYSTEM: link, CAIRN_AGENT_PRE_SWITCH_CHECKS: 'boot' },
    });
    assert.equal((await activate({ agents: { swboot: base } })).code, 0);
    const r = await activate({ agents: { swboot: next } });
    assert.equal(r.code, 1, r.stdout + r.stderr);
    assert.match(
      r.stdout,
      /swboot\s+\| == failed: installed for the next boot \(switch-to-configuration boot, after the pre-switch checks refused a live switch\); reboot required; not activated, health checks not run/,
    );
    assert.match(
      r.stdout,
      /swboot\s+\| switch-to-configuration refused to switch: pre-switch checks failed .*; installing it for the next boot instead \(switch-to-configuration boot\)/,
    );
    assert.deepEqual(
      (await deployments('swboot')).map((d) => [d.state, d.rebootRequired]),
      [
        ['succeeded', false],
        ['failed', true],
      ],
    );
    assert.equal(await profileTarget(join(bed.world.profiles, 'swboot')), next);
    assert.equal(await realpath(link), base);
    assert.equal(await readFile(record, 'utf8'), `${base} switch\n${next} switch\n${next} boot\n`);
  });

  it('rolls a failing first deployment back to the running system, not leaving it the boot default', async () => {
    const { record, link } = await place('first');
    // The system the machine runs, installed by hand before the agent: in the store, not in the profile.
    const running = (
      await buildPackages([nixosPackage(`swfirst-running-${RUN_TAG}`, record, { currentSystem: link })])
    )
      .values()
      .next().value!;
    await symlink(running, link);
    const paths = await bed.world.publish([
      nixosPackage(`swfirst-bad-${RUN_TAG}`, record, { exit: 2, currentSystem: link }),
    ]);
    const bad = paths.get(`swfirst-bad-${RUN_TAG}`)!;
    const agent = await bed.agent('swfirst', { env: { CAIRN_AGENT_CURRENT_SYSTEM: link } });
    const r = await activate({ agents: { swfirst: bad } });
    assert.equal(r.code, 1, r.stdout + r.stderr);
    assert.match(r.stdout, /swfirst\s+\| == rolled-back: switch-to-configuration exited with 2/);
    assert.ok(
      r.stdout.includes(
        `swfirst | previous: ${running} (the running system: the profile has no generation yet)`,
      ),
      r.stdout + agent.lines.join('\n'),
    );
    // The profile (the boot default) and the running system are the system that ran before.
    assert.equal(await profileTarget(join(bed.world.profiles, 'swfirst')), running);
    assert.equal(await realpath(link), running);
    assert.equal(await readFile(record, 'utf8'), `${bad} switch\n${running} switch\n`);
  });

  it('after a restart during the boot fallback, still reports installed for the next boot, not a switch', async () => {
    const { dir, record, link } = await place('bootkill');
    const agentPid = join(dir, 'agent.pid');
    const stateDir = await mkdtemp(join(tmpdir(), 'cairn-agent-bootkill-'));
    const base = nixosPackage(`swbk-base-${RUN_TAG}`, record, { currentSystem: link });
    // Refused by a pre-switch check; its `boot` kills the agent, then finishes (exit 0).
    const refused = {
      name: `swbk-new-${RUN_TAG}`,
      script: [
        'mkdir -p $out/bin',
        'echo 24.05 > $out/nixos-version',
        writeScript(
          'bin/switch-to-configuration',
          [
            `echo "$(dirname "$(dirname "$0")") $1" >> ${record}`,
            `if [ "$1" = switch ]; then echo "Pre-switch check 'switchInhibitors' failed" >&2; echo "Pre-switch checks failed" >&2; exit 1; fi`,
            `kill -9 "$(cat ${agentPid})"`,
            'sleep 2',
            'echo installed for boot',
          ].join('\n'),
        ),
      ].join('\n'),
    };
    const paths = await bed.world.publish([base, refused]);
    const env = { CAIRN_AGENT_CURRENT_SYSTEM: link, CAIRN_AGENT_PRE_SWITCH_CHECKS: 'boot' };
    const token = await bed.world.createAgent('swbk');
    const first = await bed.agent('swbk', { token, stateDir, env });
    await writeFile(agentPid, String(first.child.pid));
    assert.equal((await activate({ agents: { swbk: paths.get(base.name)! } })).code, 0);
    const f = await writeDeployJson(bed.world.profiles, { agents: { swbk: paths.get(refused.name)! } });
    const activation = cli(['deploy', 'activate', f, '--timeout', '90s'], bed.world.env);
    await once(first.child, 'exit');
    assert.equal(first.child.signalCode, 'SIGKILL');
    const second = await bed.agent('swbk', { token, stateDir, env });
    await second.waitFor(/was interrupted at activate; finishing it first/);
    const r = await activation;
    assert.equal(r.code, 1, r.stdout + r.stderr);
    assert.match(r.stdout, /swbk\s+\| == failed: installed for the next boot \(switch-to-configuration boot/);
    assert.equal(await profileTarget(join(bed.world.profiles, 'swbk')), paths.get(refused.name));
    assert.equal(await realpath(link), paths.get(base.name));
    // The boot ran once: the restarted agent re-attached to it rather than switching again.
    assert.equal(
      await readFile(record, 'utf8'),
      `${paths.get(base.name)} switch\n${paths.get(refused.name)} switch\n${paths.get(refused.name)} boot\n`,
    );
  });

  it('refuses to start with a CAIRN_AGENT_PRE_SWITCH_CHECKS other than fail or boot', async () => {
    const agent = await startAgent({
      name: 'swbad',
      profile: join(bed.world.profiles, 'swbad'),
      server: bed.server.url,
      token: await bed.world.createAgent('swbad'),
      env: { CAIRN_AGENT_PRE_SWITCH_CHECKS: 'maybe' },
    });
    const [code] = (await once(agent.child, 'exit')) as [number | null];
    assert.notEqual(code, 0);
    assert.match(
      agent.lines.join('\n'),
      /CAIRN_AGENT_PRE_SWITCH_CHECKS must be "fail" or "boot", not "maybe"/,
    );
  });
});
