import { runCli } from './cli/run-cli.ts';

// argv -> command -> exit code. The only process.exit in Cairn.
const code = await runCli(process.argv.slice(2), {
  stdout: process.stdout,
  stderr: process.stderr,
  env: process.env,
  untilStopped: () =>
    new Promise((resolve) => {
      const stop = (signal: string) => {
        // A second signal while shutting down stops at once.
        process.once(signal, () => process.exit(130));
        resolve(signal);
      };
      process.once('SIGINT', () => stop('SIGINT'));
      process.once('SIGTERM', () => stop('SIGTERM'));
    }),
});
process.exit(code);
