import { type ErrorCode, errorCodes } from './error-codes.ts';

/** Options of a {@link CairnError}. */
export interface CairnErrorOptions {
  /** The underlying error, kept for logs; never shown to remote peers. */
  cause?: unknown;
  /** Extra human-readable detail, such as the offending line. */
  detail?: string;
  /** HTTP status, when it differs from the code's default. */
  status?: number;
  /** HTTP headers the answer must carry, such as Retry-After. */
  headers?: Record<string, string>;
  /** One entry per invalid field, for an input that does not fit its schema. */
  validations?: ReadonlyArray<FieldProblem>;
}

/** One invalid field of an input: where it is (`agents.web1`, `limit`) and what is wrong. */
export interface FieldProblem {
  readonly field: string;
  readonly message: string;
}

/**
 * The one error class of Cairn: a permanent `code`, a message of the form
 * "Cannot <action>: <what is wrong> (<value>)", an HTTP status and an optional cause.
 */
export class CairnError extends Error {
  readonly code: ErrorCode;
  readonly status: number;
  readonly detail: string | undefined;
  readonly headers: Readonly<Record<string, string>>;
  /** The invalid fields, when the error is about an input that does not fit its schema. */
  readonly validations: ReadonlyArray<FieldProblem> | undefined;

  constructor(code: ErrorCode, message: string, options: CairnErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'CairnError';
    this.code = code;
    this.status = options.status ?? errorCodes[code].status;
    this.detail = options.detail;
    this.headers = options.headers ?? {};
    this.validations = options.validations;
  }
}

/** True when `err` is a {@link CairnError}, optionally with the given code. */
export function isCairnError(err: unknown, code?: ErrorCode): err is CairnError {
  return err instanceof CairnError && (code === undefined || err.code === code);
}
