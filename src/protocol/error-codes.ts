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
  // Running things.
  COMMAND_FAILED: { status: 500, summary: 'An external command exited with an error' },
  INTERNAL: { status: 500, summary: 'An unexpected internal error' },
} as const satisfies Record<string, { status: number; summary: string }>;

/** One of Cairn's permanent error codes. */
export type ErrorCode = keyof typeof errorCodes;
