import { z } from 'zod';
import { tagListSchema } from './agent-tags.ts';
import { agentInfoSchema } from './api-schemas.ts';
import { nameSchema } from './token-scope.ts';

/** Longest name pattern an enrolment token may carry: a rule for names, not a program. */
export const MAX_NAME_PATTERN_LENGTH = 200;
/** Most uses one enrolment token may be given: a fleet, not an open door. */
export const MAX_ENROL_USES = 100_000;

/** A group holding a quantifier, itself quantified: `(a+)+`, `(a|b*){2,}`, `(?:x*)*`. */
const NESTED_REPETITION = /\([^()]*[+*}][^()]*\)\s*[+*{]/;

/**
 * Compiles an enrolment token's name pattern so that it must match a whole name (`web-\d+`
 * admits `web-12`, not `xweb-12y`); returns an error message instead of throwing.
 */
export function compileNamePattern(pattern: string): RegExp | { error: string } {
  if (pattern.length > MAX_NAME_PATTERN_LENGTH) {
    return { error: `must be at most ${MAX_NAME_PATTERN_LENGTH} characters (it has ${pattern.length})` };
  }
  // A repeated group that itself repeats, such as (a+)+, can backtrack for longer than the age
  // of the universe on a 63-character name: the server would hang on one enrolment.
  if (NESTED_REPETITION.test(pattern)) {
    return {
      error: 'must not repeat a group that itself repeats, such as (a+)+, which can take exponential time',
    };
  }
  try {
    return new RegExp(`^(?:${pattern})$`, 'u');
  } catch (err) {
    return { error: `is not a valid regular expression: ${(err as Error).message}` };
  }
}

/** A name pattern, as a request carries it: a valid regular expression of bounded length. */
export const namePatternSchema = z
  .string()
  .min(1, 'must not be empty (leave it out to allow any name)')
  .superRefine((s, ctx) => {
    const compiled = compileNamePattern(s);
    if ('error' in compiled) ctx.addIssue({ code: 'custom', message: compiled.error });
  });

/** `POST /api/v1/workspaces/:ws/enrol-tokens` */
export const createEnrolTokenBodySchema = z.strictObject({
  uses: z
    .number()
    .int('must be a whole number')
    .positive('must be at least 1')
    .max(MAX_ENROL_USES, `must be at most ${MAX_ENROL_USES}`)
    .default(1),
  expiresAt: z.iso.datetime().optional(),
  tags: tagListSchema.default([]),
  namePattern: namePatternSchema.optional(),
  requireApproval: z.boolean().default(false),
});
export type CreateEnrolTokenBody = z.input<typeof createEnrolTokenBodySchema>;

/** An enrolment token as listed: never the secret. */
export const enrolTokenInfoSchema = z.object({
  id: z.number(),
  uses: z.number(),
  maxUses: z.number(),
  tags: z.array(z.string()),
  namePattern: z.string().nullable(),
  requireApproval: z.boolean(),
  createdAt: z.string(),
  createdBy: z.string(),
  expiresAt: z.string().nullable(),
  revokedAt: z.string().nullable(),
  /** `live`, `used up`, `expired` or `revoked`. */
  state: z.string(),
});
export type EnrolTokenInfo = z.infer<typeof enrolTokenInfoSchema>;

/** The answer to creating an enrolment token: the secret, shown this once. */
export const createdEnrolTokenSchema = enrolTokenInfoSchema.extend({ token: z.string() });
export const enrolTokenListSchema = z.object({ enrolTokens: z.array(enrolTokenInfoSchema) });

/** The key a machine makes before enrolling: 32 random bytes, base64url without padding. */
export const ENROL_KEY = /^[A-Za-z0-9_-]{43}$/;

/**
 * `POST /api/v1/workspaces/:ws/enrol`, authorized by an enrolment token: the name to register,
 * and the machine's enrolment key, with which it may enrol again under that name should the
 * answer be lost (the first token is then revoked).
 */
export const enrolBodySchema = z.strictObject({
  name: nameSchema,
  key: z.string().regex(ENROL_KEY, 'must be 43 characters of base64url (32 random bytes)').optional(),
});

/** The answer to an enrolment: the new agent and its own token, shown this once. */
export const enrolledAgentSchema = z.object({ agent: agentInfoSchema, token: z.string() });
