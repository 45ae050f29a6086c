import { createInterface } from 'node:readline/promises';
import type { Daemons } from './cli/daemons.ts';
import { runCli } from './cli/run-cli.ts';

// The server and the agent, loaded only when their command runs: every other command (above all
// `cairn deploy agent`, on machines with nothing but Node.js and nix) never loads the server's
// dependencies, such as the native better-sqlite3.
const daemons: Daemons = {
  async startServer(flags, env) {
    const [{ parseServerConfig }, { startServer }] = await Promise.all([
      import('./server/server-config.ts'),
      import('./server/start-server.ts'),
    ]);
    return startServer(parseServerConfig(flags, env));
  },
  async runAgent(options, signal) {
    const { runAgent } = await import('./agent/run-agent.ts');
    return await runAgent(options, signal);
  },
};

// argv -> command -> exit code. The only process.exit in Cairn.
const code = await runCli(process.argv.slice(2), {
  stdout: process.stdout,
  stderr: process.stderr,
  env: process.env,
  daemons,
  // Only a terminal is asked: piped input is never taken for a person's answer.
  ...(process.stdin.isTTY
    ? {
        ask: async (question: string) => {
          const rl = createInterface({ input: process.stdin, output: process.stderr });
          try {
            return await rl.question(question);
          } finally {
            rl.close();
          }
        },
      }
    : {}),
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
