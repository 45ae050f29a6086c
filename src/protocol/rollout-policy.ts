import { z } from 'zod';
import { durationMs } from './duration.ts';
import { NAME_PATTERN } from './token-scope.ts';

/** States of a staged rollout; the last four are final. */
export const ROLLOUT_STATES = [
  'pending',
  'running',
  'paused',
  'succeeded',
  'failed',
  'aborted',
  'superseded',
] as const;
export type RolloutState = (typeof ROLLOUT_STATES)[number];

/** The states in which a staged rollout is over. */
export const FINAL_ROLLOUT_STATES: readonly RolloutState[] = ['succeeded', 'failed', 'aborted', 'superseded'];

/** True when `state` is a final state of a staged rollout. */
export function isFinalRolloutState(state: string): boolean {
  return (FINAL_ROLLOUT_STATES as readonly string[]).includes(state);
}

/** Where one agent stands in a staged rollout. */
export const ROLLOUT_AGENT_STATES = [
  'pending',
  'deferred',
  'dispatched',
  'activating',
  'baking',
  'succeeded',
  'failed',
  'timed-out',
  'cancelled',
] as const;
export type RolloutAgentState = (typeof ROLLOUT_AGENT_STATES)[number];

/** A share of the agents (`10%`) or a number of them (`3`). */
export type Amount = { readonly percent: number } | { readonly count: number };

const DURATION_HELP = 'a duration such as 0, 30s, 15m, 2h or 1d';

function duration(field: string) {
  return z.string().transform((text, ctx) => {
    const ms = durationMs(text);
    if (ms === undefined) {
      ctx.addIssue({ code: 'custom', message: `${field} must be ${DURATION_HELP} (got '${text}')` });
      return z.NEVER;
    }
    return ms;
  });
}

/** `10%` (0 < share ≤ 100) or a positive whole number of agents. */
const amountSchema = z.union([z.number(), z.string()]).transform((v, ctx): Amount => {
  if (typeof v === 'number') {
    if (!Number.isSafeInteger(v) || v < 1) {
      ctx.addIssue({
        code: 'custom',
        message: `must be a whole number of agents ≥ 1 or a share such as "10%" (got ${v})`,
      });
      return z.NEVER;
    }
    return { count: v };
  }
  const m = /^(\d+(?:\.\d+)?)%$/.exec(v.trim());
  if (m) {
    const p = Number(m[1]);
    if (p <= 0 || p > 100) {
      ctx.addIssue({ code: 'custom', message: `must be a share over 0% and at most 100% (got '${v}')` });
      return z.NEVER;
    }
    return { percent: p };
  }
  if (/^\d+$/.test(v.trim()) && Number(v) >= 1) return { count: Number(v) };
  ctx.addIssue({
    code: 'custom',
    message: `must be a share such as "10%" or a number of agents (got '${v}')`,
  });
  return z.NEVER;
});

const batchSchema = z.union([
  amountSchema.transform((size) => ({ size, advance: 'auto' as const })),
  z.object({ size: amountSchema, advance: z.enum(['auto', 'manual']).default('auto') }).strict(),
]);

/** A canary entry: an agent name or `tag:NAME`. */
const selectorSchema = z.string().refine((s) => NAME_PATTERN.test(s.startsWith('tag:') ? s.slice(4) : s), {
  message: 'must be an agent name or tag:NAME',
});

/** Defaults of every key of a rollout policy. */
export const ROLLOUT_DEFAULTS = {
  canary: [] as string[],
  batches: ['10%', '50%', '100%'],
  maxParallel: 0,
  bake: '1m',
  agentTimeout: '15m',
  batchDeadline: '1h',
  failureThreshold: { max: '10%', minSample: 5 },
  offline: 'defer',
  onFailure: 'halt',
} as const;

/**
 * A staged rollout's policy, as written in deploy.json's `rollout` key or a `--rollout` file.
 * Unknown keys are refused: a misspelt `batchs` silently ignored would deploy everywhere at once.
 */
export const rolloutPolicySchema = z
  .object({
    canary: z.array(selectorSchema).max(1000).default([]),
    batches: z
      .array(batchSchema)
      .min(1)
      .max(100)
      .prefault([...ROLLOUT_DEFAULTS.batches]),
    maxParallel: z.number().int().min(0).default(0),
    bake: duration('bake').prefault(ROLLOUT_DEFAULTS.bake),
    agentTimeout: duration('agentTimeout').prefault(ROLLOUT_DEFAULTS.agentTimeout),
    batchDeadline: duration('batchDeadline').prefault(ROLLOUT_DEFAULTS.batchDeadline),
    failureThreshold: z
      .object({
        max: amountSchema.prefault(ROLLOUT_DEFAULTS.failureThreshold.max),
        minSample: z.number().int().min(1).default(ROLLOUT_DEFAULTS.failureThreshold.minSample),
      })
      .strict()
      .prefault({}),
    offline: z.enum(['defer', 'wait', 'fail']).default('defer'),
    onFailure: z.enum(['halt', 'pause', 'revert']).default('halt'),
  })
  .strict()
  .superRefine((p, ctx) => {
    // Cumulative sizes must rise and end at every agent: a rollout that never reaches 100% would
    // report success for machines it never touched.
    const last = p.batches.at(-1)!;
    if (!('percent' in last.size) || last.size.percent !== 100) {
      ctx.addIssue({
        code: 'custom',
        path: ['batches', p.batches.length - 1],
        message: 'the last batch must be "100%" (batches are cumulative and must reach every agent)',
      });
    }
    for (let i = 1; i < p.batches.length; i++) {
      const a = p.batches[i - 1]!.size;
      const b = p.batches[i]!.size;
      const falls =
        ('percent' in a && 'percent' in b && b.percent <= a.percent) ||
        ('count' in a && 'count' in b && b.count <= a.count);
      if (falls) {
        ctx.addIssue({
          code: 'custom',
          path: ['batches', i],
          message: 'batches are cumulative: each must be larger than the one before',
        });
      }
    }
    if ('percent' in p.failureThreshold.max && p.failureThreshold.max.percent > 100) {
      ctx.addIssue({ code: 'custom', path: ['failureThreshold', 'max'], message: 'must be at most 100%' });
    }
    if (p.agentTimeout === 0) {
      ctx.addIssue({ code: 'custom', path: ['agentTimeout'], message: 'must be longer than 0' });
    }
    if (p.batchDeadline === 0) {
      ctx.addIssue({ code: 'custom', path: ['batchDeadline'], message: 'must be longer than 0' });
    }
  });

/** A rollout policy with every default filled in and durations in milliseconds. */
export type RolloutPolicy = z.output<typeof rolloutPolicySchema>;
/** A rollout policy as written. */
export type RolloutPolicyInput = z.input<typeof rolloutPolicySchema>;

/** How an amount reads in messages and the API: `10%` or `3`. */
export function formatAmount(a: Amount): string {
  return 'percent' in a ? `${a.percent}%` : String(a.count);
}
