import assert from 'node:assert/strict';
import { join } from 'node:path';
import { before, describe, it } from 'node:test';
import { nixosPackage, profileTarget, writeDeployJson } from '../helpers/deploy-fixtures.ts';
import { useDeployTestbed } from '../helpers/deploy-testbed.ts';
import { RUN_TAG } from '../helpers/nix.ts';
import { cli } from '../helpers/server.ts';
import { getRollout, operate, waitRollout } from '../helpers/staged-rollout.ts';

const NAMES = ['s1', 's2', 's3', 's4', 's5', 's6'];
const GATED = { batches: ['50%', { size: '100%', advance: 'manual' }], bake: '0' };

describe('a newer deployment to the agents of a staged rollout', () => {
  const bed = useDeployTestbed();
  const record = () => join(bed.world.profiles, 'supersede-record');
  const everyone = (path: string) => Object.fromEntries(NAMES.map((n) => [n, path]));
  const profiles = async () =>
    Object.fromEntries(
      await Promise.all(
        NAMES.map(async (n) => [n, await profileTarget(join(bed.world.profiles, n))] as const),
      ),
    );
  /** Starts a staged rollout of `path` to every agent and waits until its manual gate holds it. */
  const heldAtGate = async (path: string) => {
    const file = await writeDeployJson(bed.world.profiles, { agents: everyone(path), rollout: GATED });
    const r = await cli(['deploy', 'activate', file, '--async'], bed.world.env);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    const id = Number(r.stdout.trim());
    const held = await waitRollout(bed.server, id, (v) => /waits for promote/.test(v.staged.waiting ?? ''));
    return { id, gated: held.deployments.filter((d) => d.batch === 1).map((d) => d.agent) };
  };
  before(async () => {
    for (const n of NAMES) await bed.agent(n);
  });

  it('supersedes the rollout: its undispatched deployments are cancelled, every agent ends on the newer closure', async () => {
    const paths = await bed.world.publish([
      nixosPackage(`sup-v1-${RUN_TAG}`, record()),
      nixosPackage(`sup-v2-${RUN_TAG}`, record()),
      nixosPackage(`sup-v3-${RUN_TAG}`, record()),
    ]);
    const [v1, v2, v3] = ['v1', 'v2', 'v3'].map((v) => paths.get(`sup-${v}-${RUN_TAG}`)!);
    assert.equal((await bed.activate({ agents: everyone(v1!) })).code, 0);
    const { id, gated } = await heldAtGate(v2!);
    assert.equal(gated.length, 3);

    // A plain deploy.json (no policy) to the same agents deploys at once.
    const newer = await bed.activate({ agents: everyone(v3!) });
    assert.equal(newer.code, 0, newer.stdout + newer.stderr);
    assert.deepEqual(await profiles(), everyone(v3!));
    const old = await waitRollout(bed.server, id, (v) => v.staged.state !== 'running');
    assert.equal(old.staged.state, 'superseded');
    assert.match(old.staged.reason!, /^superseded by a newer deployment to 3 of its agents/);
    assert.equal(old.staged.waiting, null);
    for (const d of old.deployments) {
      if (gated.includes(d.agent)) {
        assert.deepEqual([d.state, d.rolloutState], ['cancelled', 'cancelled'], d.agent);
        assert.equal(d.reason, 'superseded by a newer deployment', d.agent);
      } else assert.deepEqual([d.state, d.rolloutState], ['succeeded', 'succeeded'], d.agent);
    }
    // v2 never reached the gated agents; and the superseded rollout can no longer be steered.
    assert.equal((await operate(bed.server, id, 'promote')).status, 409);
    assert.equal((await operate(bed.server, id, 'resume')).status, 409);
  });

  it('takes only the agent a newer deploy.json names: the rollout goes on for the others', async () => {
    const paths = await bed.world.publish([
      nixosPackage(`sup-v4-${RUN_TAG}`, record()),
      nixosPackage(`sup-v5-${RUN_TAG}`, record()),
    ]);
    const v4 = paths.get(`sup-v4-${RUN_TAG}`)!;
    const v5 = paths.get(`sup-v5-${RUN_TAG}`)!;
    const { id, gated } = await heldAtGate(v4);
    const taken = gated[0]!;
    const newer = await bed.activate({ agents: { [taken]: v5 } });
    assert.equal(newer.code, 0, newer.stdout + newer.stderr);
    assert.equal(await profileTarget(join(bed.world.profiles, taken)), v5);
    // Still held at its gate, for the other agents.
    const still = await getRollout(bed.server, id);
    assert.equal(still.staged.state, 'running');
    assert.match(still.staged.waiting!, /waits for promote/);
    const mine = still.deployments.find((d) => d.agent === taken)!;
    assert.deepEqual(
      [mine.state, mine.rolloutState, mine.reason],
      ['cancelled', 'cancelled', 'superseded by a newer deployment'],
    );

    assert.equal((await operate(bed.server, id, 'promote')).status, 200);
    const done = await waitRollout(bed.server, id, (v) => v.staged.state !== 'running');
    assert.equal(done.staged.state, 'succeeded', JSON.stringify(done.staged));
    // The taken agent keeps the newer closure; the rest got the rollout's.
    assert.deepEqual(await profiles(), { ...everyone(v4), [taken]: v5 });
    assert.deepEqual(
      done.deployments.filter((d) => d.agent !== taken).map((d) => [d.agent, d.state]),
      NAMES.filter((n) => n !== taken).map((n) => [n, 'succeeded']),
    );
  });

  it('supersedes a paused rollout too, rather than leaving it for a resume to call succeeded', async () => {
    const paths = await bed.world.publish([
      nixosPackage(`sup-v6-${RUN_TAG}`, record()),
      nixosPackage(`sup-v7-${RUN_TAG}`, record()),
    ]);
    const v6 = paths.get(`sup-v6-${RUN_TAG}`)!;
    const v7 = paths.get(`sup-v7-${RUN_TAG}`)!;
    const { id, gated } = await heldAtGate(v6);
    assert.equal((await operate(bed.server, id, 'pause')).status, 200);
    const newer = await bed.activate({ agents: everyone(v7) });
    assert.equal(newer.code, 0, newer.stdout + newer.stderr);
    assert.deepEqual(await profiles(), everyone(v7));
    // Nothing was left for it to do: superseded at once, and there is nothing to resume.
    const end = await waitRollout(bed.server, id, (v) => v.staged.state !== 'paused');
    assert.equal(end.staged.state, 'superseded', JSON.stringify(end.staged));
    assert.match(end.staged.reason!, /^superseded by a newer deployment to 3 of its agents/);
    for (const n of gated) assert.equal(end.deployments.find((d) => d.agent === n)!.state, 'cancelled', n);
    assert.equal((await operate(bed.server, id, 'resume')).status, 409);
  });
});
