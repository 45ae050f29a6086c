import assert from 'node:assert/strict';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { writeDeployJson, writeScript } from '../helpers/deploy-fixtures.ts';
import { useDeployTestbed } from '../helpers/deploy-testbed.ts';
import { RUN_TAG } from '../helpers/nix.ts';
import { cli } from '../helpers/server.ts';

/**
 * An agent restarted during an activation must never take an empty status file (what a crash
 * between writing and flushing it leaves) for exit 0.
 */
describe('re-attaching to an activation after an agent restart', () => {
  const bed = useDeployTestbed();

  it('marks the deployment failed, with a reason, when the activation left an empty status file', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'cairn-restart-'));
    const stateDir = await mkdtemp(join(tmpdir(), 'cairn-agent-restart-'));
    const agentPid = join(dir, 'agent.pid');
    // The activation empties its own status file, kills the agent and then the shell that would
    // have written the status: what a power cut right after the rename would leave.
    const activate = [
      'echo activation started',
      `log=$(ls -t ${stateDir}/activations/*.log | head -n 1)`,
      `: > "$(echo "$log" | sed 's/[.]log$/.status/')"`,
      `kill -9 "$(cat ${agentPid})"`,
      'kill -9 "$PPID"',
      'exit 0',
    ].join('\n');
    const paths = await bed.world.publish([
      { name: `restart-empty-${RUN_TAG}`, script: writeScript('bin/activate', activate) },
    ]);
    const path = paths.get(`restart-empty-${RUN_TAG}`)!;
    const token = await bed.world.createAgent('restart1');
    const first = await bed.agent('restart1', { token, stateDir });
    await writeFile(agentPid, String(first.child.pid));
    const f = await writeDeployJson(bed.world.profiles, { agents: { restart1: path } });
    const activation = cli(['deploy', 'activate', f, '--timeout', '90s'], bed.world.env);
    await Promise.race([
      new Promise<void>((resolve) => first.child.once('exit', () => resolve())),
      new Promise((_, reject) =>
        setTimeout(() => reject(new Error(`agent was not killed:\n${first.lines.join('\n')}`)), 30_000),
      ),
    ]);
    assert.equal(first.child.signalCode, 'SIGKILL');

    const second = await bed.agent('restart1', { token, stateDir });
    await second.waitFor(/was interrupted at activate; finishing it first/);
    const r = await activation;
    assert.equal(r.code, 1, r.stdout + r.stderr);
    assert.match(
      r.stdout,
      /restart1\s+\| == failed: the activation's outcome is unknown: its status file \S+\.status is empty \(the machine may have lost power while writing it\); no previous generation to roll back to/,
    );
    assert.match(r.stdout, /restart1\s+failed/);
    assert.doesNotMatch(r.stdout, /succeeded/);
  });
});
