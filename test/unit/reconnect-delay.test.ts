import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { type ReconnectState, reconnectDelay } from '../../src/agent/reconnect-delay.ts';

const NOW = 1_800_000_000_000;
const curve = { initialMs: 500, maxMs: 30_000 };
/** The largest delay a full-jitter backoff can give: `random` just under 1. */
const highest = { ...curve, now: NOW, random: () => 0.999_999 };
const lowest = { ...curve, now: NOW, random: () => 0 };
const normal: ReconnectState = { failures: 0, welcomed: false, retryAt: 0, spreadMs: 0, urgency: 'normal' };

/** Runs `n` failed attempts in a row, threading the failure count as the agent does. */
function delays(n: number, state: Partial<ReconnectState> = {}, options = highest): number[] {
  const out: number[] = [];
  let failures = 0;
  for (let i = 0; i < n; i++) {
    const next = reconnectDelay({ ...normal, ...state, failures }, options);
    out.push(next.delayMs);
    failures = next.failures;
  }
  return out;
}

describe('reconnectDelay', () => {
  it('doubles the ceiling after each failure up to the cap, with full jitter', () => {
    assert.deepEqual(delays(8), [500, 1000, 2000, 4000, 8000, 16_000, 30_000, 30_000]);
    assert.deepEqual(delays(3, {}, lowest), [0, 0, 0]);
    const half = { ...curve, now: NOW, random: () => 0.5 };
    assert.deepEqual(delays(3, {}, half), [250, 500, 1000]);
  });

  it('starts over after a welcomed connection', () => {
    const next = reconnectDelay({ ...normal, failures: 6, welcomed: true }, highest);
    assert.equal(next.delayMs, 500);
    assert.equal(next.failures, 1);
  });

  it("keeps a busy server's Retry-After as a floor under the backoff, counted from now", () => {
    const retryAt = NOW + 20_000;
    assert.equal(reconnectDelay({ ...normal, retryAt }, highest).delayMs, 20_000);
    // Time already spent since the 503 counts toward the wait.
    assert.equal(reconnectDelay({ ...normal, retryAt }, { ...highest, now: NOW + 15_000 }).delayMs, 5000);
    // A longer backoff wins over a short Retry-After; a past one is no floor.
    assert.equal(reconnectDelay({ ...normal, failures: 6, retryAt }, highest).delayMs, 30_000);
    assert.equal(reconnectDelay({ ...normal, retryAt: NOW - 1000 }, lowest).delayMs, 0);
  });

  it('spreads the agents of a server going away over its window, without counting a failure', () => {
    const state = { ...normal, failures: 3, spreadMs: 10_000 };
    assert.deepEqual(reconnectDelay(state, { ...highest, random: () => 0.25 }), {
      delayMs: 2500,
      failures: 3,
    });
    // The window wins over the backoff and over Retry-After.
    assert.equal(reconnectDelay({ ...state, retryAt: NOW + 60_000 }, lowest).delayMs, 0);
  });

  it('reconnects at once when something must reach the server, and within a second while confirming', () => {
    assert.deepEqual(reconnectDelay({ ...normal, failures: 5, urgency: 'now', spreadMs: 10_000 }, highest), {
      delayMs: 0,
      failures: 5,
    });
    assert.deepEqual(delays(6, { urgency: 'soon' }), [500, 1000, 1000, 1000, 1000, 1000]);
    assert.equal(reconnectDelay({ ...normal, urgency: 'soon', retryAt: NOW + 60_000 }, highest).delayMs, 500);
  });
});
