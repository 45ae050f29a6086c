import type { Command } from 'commander';
import type { CommandContext } from './program.ts';

/**
 * `cairn server`: runs the server until SIGINT or SIGTERM. The server's modules are imported
 * only here, when the command runs, so that every other command (above all `cairn deploy agent`,
 * which must run on machines with nothing but Node.js and nix) never loads the server's
 * dependencies, such as the native better-sqlite3.
 */
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
    .option(
      '--log-retention-days <days>',
      'delete deployment logs this many days after the deployment ended (env: CAIRN_LOG_RETENTION_DAYS; default: 30)',
    )
    .action(
      async (flags: {
        listen?: string;
        dataDir?: string;
        database?: string;
        publicUrl?: string;
        logLevel?: string;
        logRetentionDays?: string;
      }) => {
        const [{ parseServerConfig }, { startServer }] = await Promise.all([
          import('../server/server-config.ts'),
          import('../server/start-server.ts'),
        ]);
        const config = parseServerConfig(flags, ctx.env);
        const server = await startServer(config);
        const signal = await (ctx.io.untilStopped?.() ?? new Promise<string>(() => {}));
        ctx.io.stderr.write(`cairn server: ${signal}, shutting down\n`);
        await server.close();
      },
    );
}
