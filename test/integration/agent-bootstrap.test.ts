import assert from 'node:assert/strict';
import { once } from 'node:events';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { type AgentProcess, startAgent } from '../helpers/agent-process.ts';
import { plainPackage, profileTarget } from '../helpers/deploy-fixtures.ts';
import { useDeployTestbed } from '../helpers/deploy-testbed.ts';
import { RUN_TAG } from '../helpers/nix.ts';

describe('cairn deploy agent --bootstrap', () => {
  const bed = useDeployTestbed();

  /** Starts agent `name` as `cairn deploy agent NAME PROFILE ...args` with its token. */
  const start = async (name: string, token: string, stateDir: string, args: string[] = []) =>
    await startAgent({
      name,
      token,
      stateDir,
      profile: join(bed.world.profiles, name),
      server: bed.server.url,
      args,
    });

  it("exits 0 after its first successful deployment once another agent process holds the agent's lock", async (t) => {
    const running: AgentProcess[] = [];
    t.after(async () => {
      await Promise.all(running.map((a) => a.stop()));
    });
    const token = await bed.world.createAgent('boot-a');
    const stateDir = await mkdtemp(join(tmpdir(), 'cairn-boot-'));
    const boot = await start('boot-a', token, stateDir, ['--bootstrap', '--bootstrap-wait', '60s']);
    running.push(boot);
    await boot.waitFor(/connected to/);
    const pkg = `boot-a-${RUN_TAG}`;
    const paths = await bed.world.publish([plainPackage(pkg)]);
    const r = await bed.activate({ agents: { 'boot-a': paths.get(pkg)! } });
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.equal(await profileTarget(join(bed.world.profiles, 'boot-a')), paths.get(pkg));
    await boot.waitFor(/bootstrap: waiting up to 60s/);
    assert.equal(boot.child.exitCode, null);
    const exited = once(boot.child, 'exit');
    // The agent the deployed system starts: the same name, state dir and token.
    const service = await start('boot-a', token, stateDir);
    running.push(service);
    await service.waitFor(/connected to/);
    const [code] = await exited;
    assert.equal(code, 0, boot.lines.join('\n'));
    assert.match(
      boot.lines.join('\n'),
      new RegExp(`agent process ${service.child.pid} holds the agent's lock`),
    );
    assert.equal(service.child.exitCode, null);
  });

  it('keeps running as the agent when no other agent process takes over', async (t) => {
    const token = await bed.world.createAgent('boot-b');
    const stateDir = await mkdtemp(join(tmpdir(), 'cairn-boot-'));
    const boot = await start('boot-b', token, stateDir, ['--bootstrap', '--bootstrap-wait', '2s']);
    t.after(() => boot.stop());
    await boot.waitFor(/connected to/);
    const first = `boot-b1-${RUN_TAG}`;
    const second = `boot-b2-${RUN_TAG}`;
    const paths = await bed.world.publish([plainPackage(first), plainPackage(second)]);
    const r = await bed.activate({ agents: { 'boot-b': paths.get(first)! } });
    assert.equal(r.code, 0, r.stdout + r.stderr);
    await boot.waitFor(/no other agent took over within 2s; going on/);
    assert.equal(boot.child.exitCode, null);
    // Still this machine's agent: it holds the lock again, and deploys.
    const rival = await start('boot-b', token, await mkdtemp(join(tmpdir(), 'cairn-boot-')));
    const [rivalCode] = await once(rival.child, 'exit');
    assert.notEqual(rivalCode, 0);
    assert.match(rival.lines.join('\n'), new RegExp(`another cairn agent .*\\(pid ${boot.child.pid}\\)`));
    const r2 = await bed.activate({ agents: { 'boot-b': paths.get(second)! } });
    assert.equal(r2.code, 0, r2.stdout + r2.stderr);
    assert.equal(await profileTarget(join(bed.world.profiles, 'boot-b')), paths.get(second));
    assert.equal(boot.child.exitCode, null);
  });
});
