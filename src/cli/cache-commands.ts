import type { Command } from 'commander';
import { cacheInfoSchema, cacheListSchema } from '../protocol/api-schemas.ts';
import type { CommandContext } from './command-context.ts';
import { formatBytes, formatTable } from './format-table.ts';

/** `cairn cache create|list|info`. */
export function registerCacheCommands(program: Command, ctx: CommandContext): void {
  const cache = program.command('cache').description('manage binary caches');
  cache
    .command('create')
    .description("create a binary cache; prints its public key (for Nix's trusted-public-keys)")
    .argument('<name>', 'cache name: a-z, 0-9, ".", "_", "-"')
    .option('--public', 'anyone may pull without a token', false)
    .action(async (name: string, opts: { public: boolean }) => {
      const info = await ctx
        .client()
        .request('POST', 'caches', cacheInfoSchema, { name, public: opts.public });
      ctx.io.stdout.write(`${info.publicKey}\n`);
      ctx.io.stderr.write(`created cache ${info.name} at ${info.url}\n`);
    });
  cache
    .command('list')
    .description('list the caches of the workspace')
    .option('--json', 'print JSON')
    .action(async (opts: { json?: boolean }) => {
      const { caches } = await ctx.client().request('GET', 'caches', cacheListSchema);
      if (opts.json) {
        ctx.io.stdout.write(`${JSON.stringify(caches, null, 2)}\n`);
        return;
      }
      ctx.io.stdout.write(
        formatTable(
          ['NAME', 'PUBLIC', 'PATHS', 'SIZE', 'PUBLIC KEY'],
          caches.map((c) => [
            c.name,
            c.public ? 'yes' : 'no',
            String(c.paths),
            formatBytes(c.fileBytes),
            c.publicKey,
          ]),
        ),
      );
    });
  cache
    .command('info')
    .description('show one cache: URL, public key, size')
    .argument('<name>', 'cache name')
    .option('--json', 'print JSON')
    .action(async (name: string, opts: { json?: boolean }) => {
      const c = await ctx.client().request('GET', `caches/${encodeURIComponent(name)}`, cacheInfoSchema);
      if (opts.json) {
        ctx.io.stdout.write(`${JSON.stringify(c, null, 2)}\n`);
        return;
      }
      ctx.io.stdout.write(
        [
          `name:        ${c.name}`,
          `url:         ${c.url}`,
          `public:      ${c.public ? 'yes' : 'no (pulling needs a token)'}`,
          `public key:  ${c.publicKey}`,
          `paths:       ${c.paths}`,
          `nar size:    ${formatBytes(c.narBytes)}`,
          `stored size: ${formatBytes(c.fileBytes)}`,
          `created:     ${c.createdAt}`,
          '',
        ].join('\n'),
      );
    });
}
