import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { TokenBucket } from '../../src/lib/token-bucket.ts';

/** A bucket on a clock the test moves by hand. */
function bucketAt(burst: number, perSecond: number) {
  const clock = { ms: 1_000_000 };
  const bucket = new TokenBucket({ burst, perSecond, now: () => clock.ms });
  return { bucket, clock };
}

function takeAll(bucket: TokenBucket): number {
  let n = 0;
  while (bucket.tryTake()) n++;
  return n;
}

describe('TokenBucket', () => {
  it('tryTake allows a full burst at once and then refuses', () => {
    const { bucket } = bucketAt(5, 1);
    assert.equal(takeAll(bucket), 5);
    assert.equal(bucket.tryTake(), false);
    assert.equal(bucket.secondsUntilToken(), 1);
  });

  it('refills at perSecond as the injected clock moves', () => {
    const { bucket, clock } = bucketAt(10, 4);
    takeAll(bucket);
    clock.ms += 250; // a quarter second at 4 per second: one token
    assert.equal(bucket.tryTake(), true);
    assert.equal(bucket.tryTake(), false);
    clock.ms += 1000;
    assert.equal(takeAll(bucket), 4);
  });

  it('never refills past the burst however long it waits', () => {
    const { bucket, clock } = bucketAt(3, 100);
    takeAll(bucket);
    clock.ms += 3_600_000;
    assert.equal(takeAll(bucket), 3);
  });

  it('a refused tryTake takes nothing: the partial token keeps growing', () => {
    const { bucket, clock } = bucketAt(1, 1);
    assert.equal(bucket.tryTake(), true);
    clock.ms += 600;
    assert.equal(bucket.tryTake(), false);
    clock.ms += 400;
    assert.equal(bucket.tryTake(), true);
  });

  it('spend stops at empty and secondsUntilToken rounds the wait up', () => {
    const { bucket, clock } = bucketAt(2, 0.5);
    for (let i = 0; i < 5; i++) bucket.spend();
    assert.equal(bucket.secondsUntilToken(), 2); // from empty, not from -3
    clock.ms += 1000;
    assert.equal(bucket.secondsUntilToken(), 1); // half a token there, one second to go
    clock.ms += 1000;
    assert.equal(bucket.secondsUntilToken(), 0);
  });
});
