import { CairnError } from '../../lib/cairn-error.ts';
import type { ErrorBody } from '../../protocol/api-schemas.ts';

/** Logs what the client must not see. */
export interface ErrorLogger {
  error(obj: object, msg: string): void;
}

/**
 * The one mapping from an error to an HTTP status and body. A {@link CairnError} says what is
 * wrong; anything else is a logged 500 that leaks nothing.
 */
export function errorResponse(
  err: unknown,
  log: ErrorLogger,
): { status: number; body: ErrorBody; headers: Readonly<Record<string, string>> } {
  if (err instanceof CairnError) {
    const body: ErrorBody = { code: err.code, message: err.message };
    if (err.detail !== undefined) body.detail = err.detail;
    if (err.validations !== undefined) body.validations = [...err.validations];
    return { status: err.status, body, headers: err.headers };
  }
  log.error({ err }, 'unexpected error while handling a request');
  return {
    status: 500,
    body: { code: 'INTERNAL', message: 'Cannot handle the request: internal error (see the server log)' },
    headers: {},
  };
}
