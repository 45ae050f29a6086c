import { Command } from 'commander';
import { CAIRN_VERSION } from '../lib/version.ts';

/** Where a command writes; the real process streams, or buffers in tests. */
export interface CliIo {
  readonly stdout: { write(chunk: string): unknown; isTTY?: boolean };
  readonly stderr: { write(chunk: string): unknown; isTTY?: boolean };
}

/** Builds the `cairn` command tree. Commands are thin: parse, call, print. */
export function createProgram(io: CliIo): Command {
  const program = new Command('cairn')
    .description('Pull-based continuous deployment for fleets of Nix machines')
    .version(CAIRN_VERSION, '-V, --version', 'print the version and exit')
    .helpOption('-h, --help', 'show help for a command')
    .showSuggestionAfterError(true)
    .configureOutput({
      writeOut: (s) => io.stdout.write(s),
      writeErr: (s) => io.stderr.write(s),
    })
    .exitOverride();
  program.addHelpText(
    'after',
    '\nEnvironment: CAIRN_SERVER (server URL), CAIRN_TOKEN (API token).\nDocumentation: the docs/ folder of the Cairn source.',
  );
  return program;
}
