import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { allowedButtons } from '../../src/server/dashboard/rollout-controls.ts';

const batches = (n: number) =>
  Array.from({ length: n }, (_, index) => ({
    index,
    label: `${Math.round(((index + 1) * 100) / n)}%`,
    advance: 'manual' as const,
    agents: 1,
    state: 'waiting' as const,
    openedAt: null,
  }));
const labels = (state: string, batch: number, n: number, promotedTo = -1) =>
  allowedButtons({ state, batch, batches: batches(n) }, promotedTo, 7).map((b) => b.label);

describe('allowedButtons (the rollout page offers what the engine would accept)', () => {
  it('offers pause, promote, promote all and both aborts while running with batches left', () => {
    assert.deepEqual(labels('running', 0, 3), [
      'Pause',
      'Promote',
      'Promote all',
      'Abort',
      'Abort and revert',
    ]);
    assert.deepEqual(labels('pending', -1, 3), [
      'Pause',
      'Promote',
      'Promote all',
      'Abort',
      'Abort and revert',
    ]);
  });

  it('offers no "promote all" with one batch left, and no promote once the last is open or promoted to', () => {
    assert.deepEqual(labels('running', 1, 3), ['Pause', 'Promote', 'Abort', 'Abort and revert']);
    assert.deepEqual(labels('running', 0, 3, 1), ['Pause', 'Promote', 'Abort', 'Abort and revert']);
    assert.deepEqual(labels('running', 2, 3), ['Pause', 'Abort', 'Abort and revert']);
    assert.deepEqual(labels('running', 0, 3, 2), ['Pause', 'Abort', 'Abort and revert']);
  });

  it('offers resume and the aborts while paused (promote needs a resume first), nothing once over', () => {
    assert.deepEqual(labels('paused', 0, 3), ['Resume', 'Abort', 'Abort and revert']);
    for (const state of ['succeeded', 'failed', 'aborted', 'superseded'])
      assert.deepEqual(labels(state, 1, 3), [], state);
  });

  it('sends the flags the API takes: full on promote all, revert on abort and revert, and asks before aborting', () => {
    const all = allowedButtons({ state: 'running', batch: 0, batches: batches(3) }, -1, 7);
    assert.equal(all.find((b) => b.label === 'Promote all')?.field, 'full');
    assert.equal(all.find((b) => b.label === 'Abort and revert')?.field, 'revert');
    assert.equal(all.find((b) => b.label === 'Promote')?.field, undefined);
    assert.match(all.find((b) => b.label === 'Abort')?.confirm ?? '', /Abort rollout #7\?/);
  });
});
