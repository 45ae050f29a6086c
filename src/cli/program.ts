import { Command, Option } from 'commander';
import { CAIRN_VERSION } from '../lib/version.ts';
import { registerAgentCommands } from './agent-commands.ts';
import { ApiClient } from './api-client.ts';
import { registerAuditCommand } from './audit-command.ts';
import { registerCacheCommands } from './cache-commands.ts';
import type { CliIo, CommandContext } from './command-context.ts';
import { registerDeployCommands } from './deploy-commands.ts';
import { registerHistoryCommands } from './history-commands.ts';
import { registerPushCommand } from './push-command.ts';
import { registerRolloutCommands } from './rollout-commands.ts';
import { registerServerCommand } from './server-command.ts';
import { registerTokenCommands } from './token-commands.ts';
import { registerWebhookCommands } from './webhook-commands.ts';

/** Builds the `cairn` command tree. Commands are thin: parse, call, print. */
export function createProgram(io: CliIo, setExitCode: (code: number) => void = () => {}): Command {
  const env = io.env ?? process.env;
  const program = new Command('cairn')
    .description('Pull-based continuous deployment for fleets of Nix machines')
    .version(CAIRN_VERSION, '-V, --version', 'print the version and exit')
    .helpOption('-h, --help', 'show help for a command')
    .addOption(new Option('--server <url>', 'Cairn server URL (env: CAIRN_SERVER)'))
    .addOption(new Option('--token <token>', 'API token (env: CAIRN_TOKEN)'))
    .addOption(new Option('--workspace <name>', 'workspace (env: CAIRN_WORKSPACE)'))
    .showSuggestionAfterError(true)
    .showHelpAfterError('(run with --help for usage)')
    .configureOutput({
      writeOut: (s) => io.stdout.write(s),
      writeErr: (s) => io.stderr.write(s),
      // Help is wrapped the same on every terminal (and in the golden files).
      getOutHelpWidth: () => 100,
      getErrHelpWidth: () => 100,
    })
    .exitOverride();
  program.addHelpText(
    'after',
    '\nEnvironment: CAIRN_SERVER (server URL), CAIRN_TOKEN (API token), CAIRN_WORKSPACE (default: default).\nDocumentation: the docs/ folder of the Cairn source.',
  );
  const ctx: CommandContext = {
    io,
    env,
    setExitCode,
    client: (tokenEnv) => {
      const o = program.opts<{ server?: string; token?: string; workspace?: string }>();
      const server = o.server ?? env.CAIRN_SERVER ?? 'http://127.0.0.1:8080';
      // An empty variable counts as unset, as in most tools.
      const fromEnv = (name: string | undefined) =>
        name === undefined ? undefined : env[name]?.trim() || undefined;
      return new ApiClient({
        server,
        token: o.token?.trim() || fromEnv(tokenEnv) || fromEnv('CAIRN_TOKEN'),
        workspace: o.workspace ?? env.CAIRN_WORKSPACE ?? 'default',
      });
    },
  };
  registerServerCommand(program, ctx);
  registerCacheCommands(program, ctx);
  registerTokenCommands(program, ctx);
  registerPushCommand(program, ctx);
  registerAgentCommands(program, ctx);
  registerDeployCommands(program, ctx);
  registerHistoryCommands(program, ctx);
  registerRolloutCommands(program, ctx);
  registerAuditCommand(program, ctx);
  registerWebhookCommands(program, ctx);
  // Subcommands inherit output and error handling from the root.
  for (const cmd of program.commands) inherit(cmd, program);
  return program;
}

function inherit(cmd: Command, root: Command): void {
  cmd
    .exitOverride()
    .configureOutput(root.configureOutput())
    .showHelpAfterError('(run with --help for usage)');
  for (const sub of cmd.commands) inherit(sub, root);
}
