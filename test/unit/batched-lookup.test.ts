import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { BatchedLookup } from '../../src/server/db/batched-lookup.ts';

describe('BatchedLookup', () => {
  it('answers every key asked in the same turn from one call, each with its own value', async () => {
    const calls: string[][] = [];
    const lookup = new BatchedLookup<string, number>(async (keys) => {
      calls.push([...keys]);
      return new Map(keys.filter((k) => k !== 'none').map((k) => [k, k.length]));
    });
    const answers = await Promise.all([
      lookup.get('a'),
      lookup.get('bbb'),
      lookup.get('a'),
      lookup.get('none'),
    ]);
    assert.deepEqual(answers, [1, 3, 1, undefined]);
    assert.deepEqual(calls, [['a', 'bbb', 'none']]);
    assert.equal(await lookup.get('cc'), 2);
    assert.equal(calls.length, 2, 'a later turn makes a new call');
  });

  it('fails every caller of a failed batch, and the next batch works again', { timeout: 5000 }, async () => {
    let fail = true;
    const lookup = new BatchedLookup<number, number>((keys) => {
      // Throwing before returning a promise must fail the callers too, not the event loop.
      if (fail) throw new Error('database gone');
      return Promise.resolve(new Map(keys.map((k) => [k, k * 2])));
    });
    const results = await Promise.allSettled([lookup.get(1), lookup.get(2), lookup.get(2)]);
    assert.deepEqual(
      results.map((r) => r.status),
      ['rejected', 'rejected', 'rejected'],
    );
    fail = false;
    assert.equal(await lookup.get(3), 6);
  });
});
