import assert from 'node:assert/strict';
import { mkdtemp, realpath, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { recordSelf } from '../../src/agent/self-upgrade.ts';
import { writeScript } from '../helpers/deploy-fixtures.ts';
import { useDeployTestbed } from '../helpers/deploy-testbed.ts';
import { fakeSystemd } from '../helpers/fake-systemd.ts';
import { nixEnv, RUN_TAG, run } from '../helpers/nix.ts';

/**
 * A deployment that changes the agent's own unit (a new Cairn) must end with the new agent
 * running: once the server has the result, the agent exits with 75, which its NixOS unit
 * restarts on. This machine has no systemd as PID 1, so `systemctl cat` is a fake
 * (test/helpers/fake-systemd.ts) printing a file the fake switch rewrites, as a real switch
 * rewrites /etc/systemd/system/cairn-agent.service and reloads systemd.
 */
describe('the agent upgrading itself', () => {
  const bed = useDeployTestbed();

  const setup = async (agent: string, rewrite: boolean) => {
    const dir = await mkdtemp(join(tmpdir(), `cairn-self-${agent}-`));
    const fake = await fakeSystemd(join(dir, 'systemd'), process.env.PATH ?? '/usr/bin:/bin');
    const unitFile = join(fake.state, 'cat', 'cairn-agent.service');
    await writeFile(
      unitFile,
      '[Service]\nExecStart=/nix/store/00000000000000000000000000000000-cairn-1/bin/cairn\n',
    );
    const link = join(dir, 'current-system');
    const pkg = `self-${agent}-${RUN_TAG}`;
    const paths = await bed.world.publish([
      {
        name: pkg,
        script: [
          'mkdir -p $out/bin',
          'echo 24.05 > $out/nixos-version',
          writeScript(
            'bin/switch-to-configuration',
            [
              'top=$(dirname "$(dirname "$0")")',
              rewrite
                ? `printf '[Service]\\nExecStart=/nix/store/11111111111111111111111111111111-cairn-2/bin/cairn\\n' > ${unitFile}`
                : '',
              `ln -sfn "$top" ${link}`,
            ].join('\n'),
          ),
        ].join('\n'),
      },
    ]);
    const a = await bed.agent(agent, {
      env: { ...fake.env, CAIRN_AGENT_UNIT: 'cairn-agent.service', CAIRN_AGENT_CURRENT_SYSTEM: link },
    });
    const exited = new Promise<number | null>((resolve) => a.child.once('exit', (code) => resolve(code)));
    return { a, exited, path: paths.get(pkg)!, fake };
  };

  it('reports success, then exits with 75 saying its unit changed, after a switch that rewrote its unit', async () => {
    const { a, exited, path, fake } = await setup('selfnew', true);
    const r = await bed.activate({ agents: { selfnew: path } });
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /selfnew\s+succeeded/);
    const code = await Promise.race([
      exited,
      new Promise<string>((resolve) => setTimeout(() => resolve('still running'), 30_000)),
    ]);
    assert.equal(code, 75, a.lines.join('\n'));
    assert.ok(
      a.lines.some((l) =>
        /restarting to run the new agent: my unit cairn-agent\.service changed \(exit code 75\)/.test(l),
      ),
      a.lines.join('\n'),
    );
    // It read its unit when it started and again after the result.
    assert.ok((await fake.calls()).filter((c) => c === 'cat -- cairn-agent.service').length >= 2);
  });

  it('keeps running after a deployment that left its unit as it was', async () => {
    const { a, exited, path, fake } = await setup('selfsame', false);
    const r = await bed.activate({ agents: { selfsame: path } });
    assert.equal(r.code, 0, r.stdout + r.stderr);
    await a.waitFor(/deployment \d+: succeeded/);
    // The check runs once the server acknowledged the result: wait for its `systemctl cat`.
    const cats = async () => (await fake.calls()).filter((c) => c === 'cat -- cairn-agent.service').length;
    for (let i = 0; i < 100 && (await cats()) < 2; i++) await new Promise((r) => setTimeout(r, 100));
    assert.equal(await cats(), 2, 'the agent did not compare its unit after the result');
    const code = await Promise.race([
      exited,
      new Promise<string>((resolve) => setTimeout(() => resolve('still running'), 1000)),
    ]);
    assert.equal(code, 'still running', a.lines.join('\n'));
    assert.ok(!a.lines.some((l) => l.includes('restarting')));
  });
});

describe("recordSelf: the agent's own store path", () => {
  it('is rooted under the state dir, so a garbage collection cannot take it while it runs', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'cairn-self-root-'));
    await writeFile(join(dir, 'main.js'), `// cairn ${RUN_TAG}\n`);
    const store = (await run('nix-store', ['--add', join(dir, 'main.js')])).trim();
    const stateDir = join(dir, 'state');
    await recordSelf(nixEnv({ CAIRN_AGENT_SYSTEMD_DIR: join(dir, 'none') }), {
      program: store,
      stateDir,
      log: (l) => assert.fail(l),
    });
    assert.equal(await realpath(join(stateDir, 'gcroots', 'agent')), store);
    // Nix counts it as a root: deleting the path is refused.
    await assert.rejects(run('nix-store', ['--delete', store]), /still alive|Cannot delete/);
  });
});
