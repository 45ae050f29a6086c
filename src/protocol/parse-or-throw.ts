import type { z } from 'zod';
import { CairnError, type FieldProblem } from '../lib/cairn-error.ts';
import type { ErrorCode } from '../lib/error-codes.ts';

/** Options of {@link parseOrThrow}. */
export interface ParseOrThrowOptions {
  /** The error code thrown; INVALID_ARGUMENT unless the caller knows better. */
  readonly code?: ErrorCode;
  /** The name shown for a problem with the whole value rather than one field. */
  readonly whole?: string;
}

/** Lists every problem zod found, each with the dotted path of its field. */
export function fieldProblems(error: z.ZodError, whole = '(body)'): FieldProblem[] {
  return error.issues.map((i) => ({ field: i.path.join('.') || whole, message: i.message }));
}

/** One line naming every problem: `agents.web1: not a valid store path; agents.web2: …`. */
export function formatProblems(problems: ReadonlyArray<FieldProblem>): string {
  return problems.map((p) => `${p.field}: ${p.message}`).join('; ');
}

/**
 * Validates `value` against `schema` and returns the parsed value; every problem is reported
 * together, each with its field, in one {@link CairnError} whose message reads
 * "Cannot <action>: <field>: <problem>; ...". The one way Cairn turns a schema failure into an error.
 */
export function parseOrThrow<S extends z.ZodType>(
  schema: S,
  value: unknown,
  options: ParseOrThrowOptions & { readonly action: string },
): z.output<S> {
  const result = schema.safeParse(value);
  if (result.success) return result.data;
  throw validationError(options.action, fieldProblems(result.error, options.whole), options.code);
}

/** The error for an input with invalid fields: one message naming them all, and the list itself. */
export function validationError(
  action: string,
  validations: ReadonlyArray<FieldProblem>,
  code: ErrorCode = 'INVALID_ARGUMENT',
): CairnError {
  return new CairnError(code, `Cannot ${action}: ${formatProblems(validations)}`, { validations });
}
