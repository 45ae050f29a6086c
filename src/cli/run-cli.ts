import { CommanderError } from 'commander';
import { isCairnError } from '../lib/cairn-error.ts';
import type { CliIo } from './command-context.ts';
import { createProgram } from './program.ts';

const INPUT_ERRORS = new Set<string>([
  'INVALID_ARGUMENT',
  'BAD_REQUEST',
  'UNAUTHENTICATED',
  'FORBIDDEN',
  'INVALID_STORE_PATH',
  'INVALID_NIX32',
  'INVALID_HASH',
  'INVALID_KEY',
]);

/**
 * Runs the CLI on `argv` (without node and script) and resolves to the process exit code:
 * 0 on success, 1 when the command failed, 2 on a usage error, bad input or bad credentials.
 */
export async function runCli(argv: readonly string[], io: CliIo): Promise<number> {
  let exitCode = 0;
  const program = createProgram(io, (code) => {
    exitCode = code;
  });
  try {
    await program.parseAsync([...argv], { from: 'user' });
    return exitCode;
  } catch (err) {
    if (err instanceof CommanderError) {
      // Help and version end in a CommanderError with exit code 0; usage errors were already printed.
      return err.exitCode === 0 ? 0 : 2;
    }
    if (isCairnError(err)) {
      io.stderr.write(`cairn: ${err.message}${err.detail ? `\n  ${err.detail}` : ''}\n`);
      // Bad input and bad credentials are the caller's to fix: 2, as for usage errors.
      return INPUT_ERRORS.has(err.code) ? 2 : 1;
    }
    io.stderr.write(
      `cairn: unexpected error: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`,
    );
    return 1;
  }
}
