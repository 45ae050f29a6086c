import { CommanderError } from 'commander';
import { isCairnError } from '../lib/cairn-error.ts';
import { type CliIo, createProgram } from './program.ts';

/**
 * Runs the CLI on `argv` (without node and script) and resolves to the process exit code:
 * 0 on success, 1 when the command failed, 2 on a usage error.
 */
export async function runCli(argv: readonly string[], io: CliIo): Promise<number> {
  const program = createProgram(io);
  try {
    await program.parseAsync([...argv], { from: 'user' });
    return 0;
  } catch (err) {
    if (err instanceof CommanderError) {
      // Help and version end in a CommanderError with exit code 0; usage errors were already printed.
      return err.exitCode === 0 ? 0 : 2;
    }
    if (isCairnError(err)) {
      io.stderr.write(`cairn: ${err.message}${err.detail ? `\n  ${err.detail}` : ''}\n`);
      return 1;
    }
    io.stderr.write(
      `cairn: unexpected error: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`,
    );
    return 1;
  }
}
