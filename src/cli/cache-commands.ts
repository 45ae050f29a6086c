import type { Command } from 'commander';
import { CairnError } from '../lib/cairn-error.ts';
import { keyNameProblem } from '../nix/signing-key.ts';
import {
  type CacheKeyInfo,
  cacheInfoSchema,
  cacheKeysSchema,
  cacheListSchema,
} from '../protocol/api-schemas.ts';
import type { CommandContext } from './command-context.ts';
import { formatBytes, formatTable } from './format-table.ts';

/** `cairn cache create|list|info|rotate-key|retire-key`. */
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
  cache
    .command('rotate-key')
    .description(
      'make a new signing key; narinfos are signed by it and the older keys until they are retired',
    )
    .argument('<name>', 'cache name')
    .action(async (name: string) => {
      const { keys } = await ctx
        .client()
        .request('POST', `caches/${encodeURIComponent(name)}/keys`, cacheKeysSchema);
      const newest = keys.filter((k) => k.retiredAt === null).at(-1);
      if (!newest)
        throw new CairnError(
          'COMMAND_FAILED',
          `Cannot rotate the key: the server lists no active key (${name})`,
        );
      ctx.io.stdout.write(`${newest.publicKey}\n`);
      ctx.io.stderr.write(
        [
          `cache ${name} now signs with ${activeNames(keys)}.`,
          `Add the new key to trusted-public-keys on every machine, then retire the old one:`,
          ...keys
            .filter((k) => k.retiredAt === null && k.name !== newest.name)
            .map((k) => `  cairn cache retire-key ${name} ${k.name}`),
          '',
        ].join('\n'),
      );
    });
  cache
    .command('retire-key')
    .description('stop signing with a key: machines trusting only it can no longer substitute')
    .argument('<name>', 'cache name')
    .argument('<key>', "the key's name (such as main-1), or the public key NAME:BASE64")
    .action(async (name: string, key: string) => {
      const keyName = key.includes(':') ? key.slice(0, key.indexOf(':')) : key;
      const problem = keyNameProblem(keyName);
      if (problem !== undefined)
        throw new CairnError(
          'INVALID_ARGUMENT',
          `Cannot retire the key: ${problem} (${JSON.stringify(key)})`,
        );
      const { keys } = await ctx
        .client()
        .request(
          'DELETE',
          `caches/${encodeURIComponent(name)}/keys/${encodeURIComponent(keyName)}`,
          cacheKeysSchema,
        );
      ctx.io.stderr.write(`retired key ${keyName}; cache ${name} now signs with ${activeNames(keys)}\n`);
    });
}

function activeNames(keys: readonly CacheKeyInfo[]): string {
  return keys
    .filter((k) => k.retiredAt === null)
    .map((k) => k.name)
    .join(', ');
}
