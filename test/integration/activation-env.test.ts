import assert from 'node:assert/strict';
import { mkdtemp, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { nixosPackage, writeScript } from '../helpers/deploy-fixtures.ts';
import { useDeployTestbed } from '../helpers/deploy-testbed.ts';
import { RUN_TAG } from '../helpers/nix.ts';

/**
 * The scripts of a deployed configuration never see the agent's token: activation, the
 * rollback script and command health checks each dump their environment, which must hold no
 * CAIRN_ variable and nowhere the token.
 */
describe('the environment of activation, health-check and rollback scripts', () => {
  const bed = useDeployTestbed();

  it('passes no CAIRN_ variable and not the token to any of them, and NIXOS_INSTALL_BOOTLOADER=0 to the switch', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'cairn-env-'));
    const dumps = {
      switch: join(dir, 'switch.env'),
      check: join(dir, 'check.env'),
      rollbackScript: join(dir, 'rollback-script.env'),
      plain: join(dir, 'plain.env'),
    };
    const system = nixosPackage(`env-sys-${RUN_TAG}`, join(dir, 'record'), { envDump: dumps.switch });
    const paths = await bed.world.publish([
      { ...system, script: `${system.script}\n${writeScript('bin/check', `env > ${dumps.check}`)}` },
      {
        name: `env-rollback-script-${RUN_TAG}`,
        script: `cat > $out <<'CAIRN_EOF'\n#!/bin/sh\nenv > ${dumps.rollbackScript}\nCAIRN_EOF\nchmod +x $out`,
      },
      { name: `env-plain-${RUN_TAG}`, script: writeScript('bin/activate', `env > ${dumps.plain}`) },
    ]);
    const token = await bed.world.createAgent('envsys');
    await bed.agent('envsys', {
      token,
      // More CAIRN_ variables than the token: none of them may pass either.
      env: { CAIRN_AGENT_CURRENT_SYSTEM: join(dir, 'current-system'), CAIRN_WORKSPACE: 'default' },
    });
    const plainToken = await bed.world.createAgent('envplain');
    await bed.agent('envplain', { token: plainToken });

    const r = await bed.activate({
      agents: { envsys: paths.get(`env-sys-${RUN_TAG}`)!, envplain: paths.get(`env-plain-${RUN_TAG}`)! },
      rollbackScript: { 'x86_64-linux': paths.get(`env-rollback-script-${RUN_TAG}`)! },
      healthChecks: { envsys: [{ command: ['bin/check'], retries: 0 }] },
    });
    assert.equal(r.code, 0, r.stdout + r.stderr);

    for (const [what, file] of Object.entries(dumps)) {
      const text = await readFile(file, 'utf8');
      const lines = text.split('\n');
      assert.ok(
        lines.some((l) => l.startsWith('PATH=')),
        `${what}: the environment has no PATH:\n${text}`,
      );
      assert.deepEqual(
        lines.filter((l) => l.startsWith('CAIRN_')),
        [],
        `${what}: CAIRN_ variables reached the script`,
      );
      assert.ok(!text.includes(token) && !text.includes(plainToken), `${what}: the agent's token reached it`);
    }
    assert.ok((await readFile(dumps.switch, 'utf8')).split('\n').includes('NIXOS_INSTALL_BOOTLOADER=0'));
  });
});
