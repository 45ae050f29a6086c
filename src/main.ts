import { runCli } from './cli/run-cli.ts';

// argv -> command -> exit code. The only process.exit in Cairn.
const code = await runCli(process.argv.slice(2), {
  stdout: process.stdout,
  stderr: process.stderr,
});
process.exit(code);
