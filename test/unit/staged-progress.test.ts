import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { StagedProgress } from '../../src/cli/staged-progress.ts';
import type { DeploymentInfo, StagedRollout } from '../../src/protocol/api-schemas.ts';

const deployment = (id: number, agent: string, batch: number): DeploymentInfo => ({
  id,
  rolloutId: 7,
  agent,
  storePath: `/nix/store/${'a'.repeat(32)}-x`,
  kind: 'deploy',
  state: 'pending',
  step: null,
  reason: null,
  rebootRequired: false,
  createdAt: '2026-12-07T06:00:00.000Z',
  startedAt: null,
  finishedAt: null,
  batch,
  rolloutState: 'pending',
});

/** A status of a rollout with a canary batch and two more. */
function status(
  state: string,
  batches: Array<'waiting' | 'open' | 'done'>,
  extra: Partial<StagedRollout> = {},
): StagedRollout {
  const labels = ['canary', '50%', '100%'];
  return {
    state,
    reason: null,
    waiting: null,
    batch: batches.lastIndexOf('open') >= 0 ? batches.lastIndexOf('open') : batches.lastIndexOf('done'),
    batches: batches.map((s, index) => ({
      index,
      label: labels[index]!,
      advance: 'auto',
      agents: index === 0 ? 1 : 2,
      state: s,
      openedAt: null,
    })),
    decided: 0,
    failed: 0,
    deferred: 0,
    policy: {},
    finishedAt: null,
    ...extra,
  };
}

describe('StagedProgress', () => {
  it('prints a line when a batch opens, when it is done (with what its agents ended in), and when the wait changes', () => {
    const p = new StagedProgress(7, [deployment(1, 'c1', 0), deployment(2, 'w1', 1), deployment(3, 'w2', 1)]);
    assert.deepEqual(
      p.update(
        status('running', ['open', 'waiting', 'waiting'], {
          waiting: 'batch 1 of 3 (canary): 1 dispatched (c1)',
        }),
      ),
      ['batch 1/3 (canary) opened: 1 agent', 'waiting: batch 1 of 3 (canary): 1 dispatched (c1)'],
    );
    // The same status again prints nothing.
    assert.deepEqual(
      p.update(
        status('running', ['open', 'waiting', 'waiting'], {
          waiting: 'batch 1 of 3 (canary): 1 dispatched (c1)',
        }),
      ),
      [],
    );
    p.noteDeployment(1, 'succeeded');
    p.noteDeployment(3, 'succeeded');
    assert.deepEqual(
      p.update(
        status('running', ['done', 'open', 'waiting'], { waiting: 'batch 2 of 3 (50%): 1 activating (w1)' }),
      ),
      [
        'batch 1/3 (canary) done: 1 succeeded',
        'batch 2/3 (50%) opened: 2 agents',
        'waiting: batch 2 of 3 (50%): 1 activating (w1)',
      ],
    );
    assert.equal(p.final, false);
  });

  it('prints pause, resume and the final state with its reason; a pending agent of a done batch is deferred', () => {
    const p = new StagedProgress(7, [deployment(1, 'c1', 0), deployment(2, 'w1', 1), deployment(3, 'w2', 1)]);
    p.update(status('running', ['open', 'waiting', 'waiting']));
    assert.deepEqual(
      p.update(
        status('paused', ['open', 'waiting', 'waiting'], {
          reason: 'paused by ci',
          waiting: 'paused: resume',
        }),
      ),
      ['rollout 7: paused (paused by ci)', 'waiting: paused: resume'],
    );
    assert.deepEqual(
      p.update(status('running', ['open', 'waiting', 'waiting'], { waiting: 'paused: resume' })),
      ['rollout 7: running'],
    );
    p.noteDeployment(1, 'succeeded');
    p.noteDeployment(2, 'failed');
    assert.deepEqual(
      p.update(status('failed', ['done', 'done', 'waiting'], { reason: '1 of 2 decided agents failed' })),
      [
        'batch 1/3 (canary) done: 1 succeeded',
        'batch 2/3 (50%) opened: 2 agents',
        'batch 2/3 (50%) done: 1 failed, 1 deferred (offline)',
        'rollout 7: failed (1 of 2 decided agents failed)',
      ],
    );
    assert.equal(p.final, true);
  });
});
