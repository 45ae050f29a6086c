import { backoffDelay } from '../lib/backoff.ts';

/** How the last connection ended and what the agent waits for: the input of {@link reconnectDelay}. */
export interface ReconnectState {
  /** Failed attempts counted so far (the previous call's `failures`; 0 at first). */
  readonly failures: number;
  /** The connection that just ended was welcomed: a success, so the backoff starts over. */
  readonly welcomed: boolean;
  /** Epoch ms before which the server asked not to come back (its Retry-After), or 0. */
  readonly retryAt: number;
  /** The server went away and asked its agents to come back within this many ms, or 0. */
  readonly spreadMs: number;
  /**
   * `now`: something must reach the server at once (a result, a confirmation's new connection);
   * `soon`: a confirmation is waiting, so delays stay under a second; `normal` otherwise.
   */
  readonly urgency: 'now' | 'soon' | 'normal';
}

/** The clock, the randomness and the backoff curve {@link reconnectDelay} uses. */
export interface ReconnectOptions {
  /** The current time, epoch ms. */
  readonly now: number;
  /** Source of randomness in [0, 1). */
  readonly random: () => number;
  readonly initialMs: number;
  readonly maxMs: number;
}

/** A confirmation keeps retrying at least this often: its timeout runs while the agent waits. */
const CONFIRMING_MAX_MS = 1000;

/**
 * How long the agent waits before its next connection attempt, and the failure count to pass
 * next time. Exponential backoff with full jitter, reset by a welcome; a server going away
 * spreads its agents over the window it names instead (a fleet must not return in one burst);
 * a busy server's Retry-After is a floor under the backoff. Pure: the clock and the randomness
 * are passed in, so tests need not sleep.
 */
export function reconnectDelay(
  state: ReconnectState,
  options: ReconnectOptions,
): { delayMs: number; failures: number } {
  let failures = state.welcomed ? 0 : state.failures;
  const backoff = () => {
    const delay = backoffDelay(failures, options);
    failures = Math.min(failures + 1, 64);
    return delay;
  };
  if (state.urgency === 'now') return { delayMs: 0, failures };
  if (state.urgency === 'soon') return { delayMs: Math.min(backoff(), CONFIRMING_MAX_MS), failures };
  if (state.spreadMs > 0) return { delayMs: Math.round(options.random() * state.spreadMs), failures };
  const delayMs = backoff();
  return { delayMs: Math.max(delayMs, state.retryAt - options.now), failures };
}
