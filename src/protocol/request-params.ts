import { z } from 'zod';

// Query strings and path segments arrive as text: these schemas are the one way Cairn turns
// them into numbers, so that `?limit=abc` or an id of `abc` is the same 400 INVALID_ARGUMENT on
// every route (parsed with `parseOrThrow`, naming the field in `validations`).

const DIGITS = /^[0-9]+$/;

/** Text that must be given, with the message for a missing one. */
const text = () =>
  z.string({ error: (i) => (i.input === undefined ? 'is required' : `must be text (${String(i.input)})`) });

/** A whole number from `min` to 2^53 - 1, given as decimal digits. */
function wholeNumber(min: number) {
  return text()
    .refine((t) => DIGITS.test(t) && Number.isSafeInteger(Number(t)) && Number(t) >= min, {
      error: (i) => `must be a whole number from ${min} to ${Number.MAX_SAFE_INTEGER} (${String(i.input)})`,
    })
    .transform(Number);
}

/** The id of a rollout, deployment or audit entry in a path or query: a whole number from 1. */
export const idParamSchema = wholeNumber(1);

/** A line number in a log (`?after=`, `Last-Event-ID`): a whole number from 0, 0 when absent. */
export const seqParamSchema = wholeNumber(0).optional().default(0);

/**
 * How many rows to answer (`?limit=`): a whole number from 1, `fallback` when absent, and at most
 * `max` (a larger one is served as `max`, as the API has always done).
 */
export function limitParamSchema(fallback: number, max: number) {
  return wholeNumber(1)
    .optional()
    .transform((n) => Math.min(n ?? fallback, max));
}

/** Path parameters of a route about one thing by number (`/rollouts/:id`, `/deployments/:id`). */
export const idPathSchema = z.object({ id: idParamSchema });
