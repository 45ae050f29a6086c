import type { Command } from 'commander';
import { parseServerConfig } from '../server/server-config.ts';
import { startServer } from '../server/start-server.ts';
import type { CommandContext } from './program.ts';

/** `cairn server`: runs the server until SIGINT or SIGTERM. */
export function registerServerCommand(program: Command, ctx: CommandContext): void {
  program
    .command('server')
    .description('run the Cairn server: API, binary cache and agent hub on one port')
    .option('--listen <host:port>', 'address to listen on (env: CAIRN_LISTEN)', undefined)
    .option('--data-dir <dir>', 'state directory (env: CAIRN_DATA_DIR; default: $XDG_STATE_HOME/cairn)')
    .option(
      '--database <url>',
      'postgres://... or sqlite:FILE (env: CAIRN_DATABASE_URL; default: SQLite in the data dir)',
    )
    .option('--public-url <url>', 'URL clients reach this server at, behind a proxy (env: CAIRN_PUBLIC_URL)')
    .option('--log-level <level>', 'fatal, error, warn, info, debug or trace (env: CAIRN_LOG_LEVEL)')
    .action(
      async (flags: {
        listen?: string;
        dataDir?: string;
        database?: string;
        publicUrl?: string;
        logLevel?: string;
      }) => {
        const config = parseServerConfig(flags, ctx.env);
        const server = await startServer(config);
        const signal = await (ctx.io.untilStopped?.() ?? new Promise<string>(() => {}));
        ctx.io.stderr.write(`cairn server: ${signal}, shutting down\n`);
        await server.close();
      },
    );
}
