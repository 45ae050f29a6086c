import type { Command } from 'commander';
import { registerBackupCommands } from './backup-commands.ts';
import type { CommandContext } from './command-context.ts';
import type { ServerCommandFlags } from './daemons.ts';

/**
 * `cairn server`: runs the server until SIGINT or SIGTERM. The server itself comes from the
 * daemons src/main.ts supplies, which loads its modules only when this command runs.
 */
export function registerServerCommand(program: Command, ctx: CommandContext): void {
  const server = program
    .command('server')
    .description('run the Cairn server: API, binary cache and agent hub on one port')
    .option('--listen <host:port>', 'address to listen on (env: CAIRN_LISTEN)', undefined)
    .option('--data-dir <dir>', 'state directory (env: CAIRN_DATA_DIR; default: $XDG_STATE_HOME/cairn)')
    .option(
      '--database <url>',
      'postgres://... or sqlite:FILE (env: CAIRN_DATABASE_URL; default: SQLite in the data dir)',
    )
    .option(
      '--blob-store <url>',
      'where NARs live: s3://BUCKET[/PREFIX]?endpoint=URL&region=R&path-style=true&downloads=proxy|redirect&redirect-ttl=5m; credentials from AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN (env: CAIRN_BLOB_STORE; default: the blobs folder of the data dir)',
    )
    .option('--public-url <url>', 'URL clients reach this server at, behind a proxy (env: CAIRN_PUBLIC_URL)')
    .option('--log-level <level>', 'fatal, error, warn, info, debug or trace (env: CAIRN_LOG_LEVEL)')
    .option(
      '--log-format <format>',
      'json, pretty (readable lines) or auto: pretty on a terminal, JSON otherwise (env: CAIRN_LOG_FORMAT; default: auto)',
    )
    .option(
      '--log-retention-days <days>',
      'delete deployment logs this many days after the deployment ended (env: CAIRN_LOG_RETENTION_DAYS; default: 30)',
    )
    .option(
      '--gc-interval <duration>',
      'collect every binary cache this often, such as 30m or 1d; 0 collects only on `cairn cache gc` (env: CAIRN_GC_INTERVAL; default: 1h)',
    )
    .option(
      '--trusted-proxy <addr,...>',
      'proxies (addresses or ADDR/PREFIX networks) whose X-Forwarded-For names the client, for the failed-authentication limit and the audit log (env: CAIRN_TRUSTED_PROXY)',
    )
    .option(
      '--metrics-listen <host:port>',
      'also serve GET /metrics, without a token, on this address, such as 127.0.0.1:9464 (env: CAIRN_METRICS_LISTEN; default: none, and /metrics on --listen needs a token with the metrics scope)',
    )
    .option(
      '--metrics-per-agent',
      'add one series per agent to /metrics (env: CAIRN_METRICS_PER_AGENT=1; default: off)',
    )
    .action(async (flags: ServerCommandFlags) => {
      if (!ctx.io.daemons) throw new Error('cairn server: this CLI was built without the server');
      const running = await ctx.io.daemons.startServer(flags, ctx.env);
      const signal = await (ctx.io.untilStopped?.() ?? new Promise<string>(() => {}));
      ctx.io.stderr.write(`cairn server: ${signal}, shutting down\n`);
      await running.close();
    });
  registerBackupCommands(server, ctx);
}
