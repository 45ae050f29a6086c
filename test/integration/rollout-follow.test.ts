import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { plainPackage, profileTarget, writeDeployJson } from '../helpers/deploy-fixtures.ts';
import { useDeployTestbed } from '../helpers/deploy-testbed.ts';
import { RUN_TAG } from '../helpers/nix.ts';
import { cli } from '../helpers/server.ts';

/** `cairn deploy activate --rollout` following a staged rollout on real agents and the real nix. */
describe('cairn deploy activate following a staged rollout', () => {
  const bed = useDeployTestbed();

  it("prints a line per batch opened and done, each agent's log, the final state, and exits 0", async () => {
    const names = ['f1', 'f2', 'f3'];
    const paths = await bed.world.publish(names.map((n) => plainPackage(`follow-${n}-${RUN_TAG}`)));
    for (const n of names) await bed.agent(n);
    // deploy.json stays Cachix's; the policy comes from its own file.
    const file = await writeDeployJson(bed.world.profiles, {
      agents: Object.fromEntries(names.map((n) => [n, paths.get(`follow-${n}-${RUN_TAG}`)!])),
    });
    const policy = join(bed.world.profiles, 'policy.json');
    await writeFile(policy, JSON.stringify({ batches: ['50%', '100%'], bake: '0' }));

    const r = await cli(
      ['deploy', 'activate', file, '--rollout', policy, '--timeout', '120s'],
      bed.world.env,
    );
    assert.equal(r.code, 0, r.stdout + r.stderr);
    const id =
      /^rollout (\d+): staged over 2 batches \(50%: (\d) agents?, 100%: (\d) agents?\) to f1, f2, f3$/m.exec(
        r.stderr,
      );
    assert.ok(id, r.stderr);
    const [first, second] = [Number(id[2]), Number(id[3])];
    assert.equal(first + second, 3);
    // In order: the first batch opens and is done before the second opens; then the end.
    const lines = r.stderr.split('\n');
    const at = (re: RegExp) => {
      const i = lines.findIndex((l) => re.test(l));
      assert.ok(i >= 0, `no line ${re} in:\n${r.stderr}`);
      return i;
    };
    const opened1 = at(new RegExp(`^batch 1/2 \\(50%\\) opened: ${first} agents?$`));
    const done1 = at(new RegExp(`^batch 1/2 \\(50%\\) done: ${first} succeeded$`));
    const opened2 = at(new RegExp(`^batch 2/2 \\(100%\\) opened: ${second} agents?$`));
    const done2 = at(new RegExp(`^batch 2/2 \\(100%\\) done: ${second} succeeded$`));
    const end = at(new RegExp(`^rollout ${id[1]}: succeeded$`));
    assert.ok(opened1 < done1 && done1 <= opened2 && opened2 < done2 && done2 < end, r.stderr);
    assert.match(r.stderr, /^waiting: batch 1 of 2 \(50%\): /m);
    // maxParallel is 0: no agent is ever said to be queued behind it.
    assert.doesNotMatch(r.stderr, /queued/);
    for (const n of names) {
      // Per-agent log lines as for any rollout, and the summary with each agent's batch.
      assert.match(r.stdout, new RegExp(`^${n} \\| activated follow-${n}-${RUN_TAG}$`, 'm'));
      assert.match(r.stdout, new RegExp(`^${n}\\s+[12] \\((50|100)%\\)\\s+succeeded\\s+succeeded\\s`, 'm'));
      assert.equal(await profileTarget(join(bed.world.profiles, n)), paths.get(`follow-${n}-${RUN_TAG}`));
    }
  });
});
