/**
 * The permanent error codes of Cairn, with the HTTP status each maps to.
 *
 * A code never changes meaning once released; tests assert codes, not wording.
 * Every code is documented in `docs/errors.md` (a unit test keeps the two in step).
 */
export const errorCodes = {
  // Input that is not what it claims to be.
  INVALID_ARGUMENT: { status: 400, summary: 'A flag, argument or field has an invalid value' },
  INVALID_NIX32: { status: 400, summary: 'A string is not valid Nix base-32' },
  INVALID_HASH: { status: 400, summary: 'A hash is malformed or uses an unsupported algorithm' },
  INVALID_STORE_PATH: { status: 400, summary: 'A store path does not follow Nix rules' },
  INVALID_NARINFO: { status: 400, summary: 'A .narinfo file is malformed' },
  INVALID_NAR: { status: 400, summary: 'A NAR archive is malformed or hostile' },
  INVALID_KEY: { status: 400, summary: 'A Nix signing or public key is malformed' },
  INVALID_SIGNATURE: { status: 400, summary: 'A signature is malformed' },
  // Requests.
  BAD_REQUEST: { status: 400, summary: 'The request is malformed' },
  UNAUTHENTICATED: { status: 401, summary: 'No valid token was given' },
  FORBIDDEN: { status: 403, summary: 'The token lacks the right for this' },
  NOT_FOUND: { status: 404, summary: 'No such thing exists' },
  METHOD_NOT_ALLOWED: { status: 405, summary: 'The method is not allowed on this path' },
  ALREADY_EXISTS: { status: 409, summary: 'Something of that name already exists' },
  CONFLICT: {
    status: 409,
    summary: 'The thing is not in a state that allows this (such as resuming a rollout that runs)',
  },
  REQUEST_TIMEOUT: { status: 408, summary: 'The request body did not arrive in time' },
  TOO_LARGE: { status: 413, summary: 'The request body is larger than allowed' },
  RANGE_NOT_SATISFIABLE: { status: 416, summary: 'The requested byte range lies outside the file' },
  TOO_MANY_REQUESTS: {
    status: 429,
    summary: 'Too many failed authentications from this address; retry later',
  },
  // Binary cache uploads.
  UPLOAD_MISMATCH: { status: 400, summary: 'An upload does not match its name or its narinfo' },
  UPLOAD_INCOMPLETE: {
    status: 400,
    summary: 'A narinfo refers to a NAR or references the cache does not hold',
  },
  UNSUPPORTED_COMPRESSION: { status: 400, summary: 'A NAR uses a compression the cache does not accept' },
  // Backups.
  INVALID_BACKUP: {
    status: 400,
    summary: 'A backup file is truncated, altered, or not a Cairn backup',
  },
  NOT_SUPPORTED: {
    status: 501,
    summary: 'This server configuration does not support the operation (such as a backup on PostgreSQL)',
  },
  // Running things.
  UNAVAILABLE: {
    status: 503,
    summary: 'The server is busy (too many agents connecting at once); retry after the delay it names',
  },
  STORAGE_UNAVAILABLE: {
    status: 503,
    summary: 'The blob store (an S3 bucket) cannot be reached or refused the request',
  },
  COMMAND_FAILED: { status: 500, summary: 'An external command exited with an error' },
  INTERNAL: { status: 500, summary: 'An unexpected internal error' },
} as const satisfies Record<string, { status: number; summary: string }>;

/** One of Cairn's permanent error codes. */
export type ErrorCode = keyof typeof errorCodes;
