import type { Command } from 'commander';
import { z } from 'zod';
import { CairnError } from '../lib/cairn-error.ts';
import { keyNameProblem } from '../nix/signing-key.ts';
import { isStorePath } from '../nix/store-path.ts';
import {
  type CacheKeyInfo,
  cacheInfoSchema,
  cacheKeysSchema,
  cacheListSchema,
} from '../protocol/api-schemas.ts';
import { parseBytes } from '../protocol/byte-size.ts';
import { gcResultSchema, pinListSchema, pinSchema } from '../protocol/cache-gc-schemas.ts';
import { formatSeconds } from '../protocol/duration.ts';
import type { CommandContext } from './command-context.ts';
import { formatBytes, formatTable } from './format-table.ts';
import { parseDuration } from './parse-duration.ts';

/** `cairn cache create|list|info|set|gc|pin|unpin|pins|rotate-key|retire-key`. */
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
          // During a rotation the older keys sign too, until they are retired.
          ...(c.signingKeys ?? [])
            .filter((k) => k !== c.publicKey)
            .map(
              (k) =>
                `also signs:  ${k} (retire it with: cairn cache retire-key ${c.name} ${k.split(':')[0]})`,
            ),
          `paths:       ${c.paths}`,
          `nar size:    ${formatBytes(c.narBytes)}`,
          `stored size: ${formatBytes(c.fileBytes)}`,
          `created:     ${c.createdAt}`,
          `retention:   ${formatSeconds(c.retentionSeconds)}${c.retentionIsDefault ? ' (the default)' : ''}`,
          `quota:       ${c.quotaBytes === null ? 'none' : formatBytes(c.quotaBytes)}`,
          ...(c.usage
            ? [
                `reclaimable: ${formatBytes(c.usage.reclaimableBytes)} (${c.usage.reclaimablePaths} paths, ${c.usage.reclaimableNarFiles} NAR files)`,
                `roots:       ${c.usage.rootPaths} paths needed by deployments and pins (${c.usage.pins} pins)`,
                `last gc:     ${
                  c.usage.lastGc
                    ? `${c.usage.lastGc.startedAt} (${c.usage.lastGc.trigger}): ${
                        c.usage.lastGc.error
                          ? `failed: ${c.usage.lastGc.error}`
                          : `removed ${c.usage.lastGc.pathsRemoved} paths, freed ${formatBytes(c.usage.lastGc.bytesFreed)}`
                      }`
                    : 'never'
                }`,
              ]
            : []),
          '',
        ].join('\n'),
      );
    });
  cache
    .command('set')
    .description('set how long a cache keeps what nobody deploys, and its size quota')
    .argument('<name>', 'cache name')
    .option(
      '--retention <duration>',
      'keep what was pushed or fetched this recently, such as 28d; "default" for the server\'s 28d',
    )
    .option(
      '--quota <size>',
      'over this many stored bytes (such as 50GiB), drop least recently used paths first; "none" for no quota',
    )
    .action(async (name: string, opts: { retention?: string; quota?: string }) => {
      if (opts.retention === undefined && opts.quota === undefined) {
        throw new CairnError(
          'INVALID_ARGUMENT',
          'Cannot change the cache: give --retention, --quota or both',
        );
      }
      const body: { retentionSeconds?: number | null; quotaBytes?: number | null } = {};
      if (opts.retention !== undefined) {
        if (opts.retention === 'default') body.retentionSeconds = null;
        else {
          const ms = parseDuration(opts.retention, '--retention');
          if (ms < 1000)
            throw new CairnError(
              'INVALID_ARGUMENT',
              `Cannot use --retention: at least 1s (${opts.retention})`,
            );
          body.retentionSeconds = Math.round(ms / 1000);
        }
      }
      if (opts.quota !== undefined) {
        if (opts.quota === 'none') body.quotaBytes = null;
        else {
          const bytes = parseBytes(opts.quota);
          if (bytes === undefined || bytes < 1) {
            throw new CairnError(
              'INVALID_ARGUMENT',
              `Cannot use --quota: expected a size such as 500MiB or 50GiB, or none (${opts.quota})`,
            );
          }
          body.quotaBytes = bytes;
        }
      }
      const set = await ctx
        .client()
        .request(
          'PATCH',
          `caches/${encodeURIComponent(name)}`,
          z.object({ retentionSeconds: z.number().nullable(), quotaBytes: z.number().nullable() }),
          body,
        );
      ctx.io.stderr.write(
        `cache ${name}: retention ${set.retentionSeconds === null ? 'the default (28d)' : formatSeconds(set.retentionSeconds)}, quota ${set.quotaBytes === null ? 'none' : formatBytes(set.quotaBytes)}\n`,
      );
    });
  cache
    .command('gc')
    .description(
      'remove what no deployment or pin needs and nobody used within the retention; prints what went and the space freed',
    )
    .argument('<name>', 'cache name')
    .option('--dry-run', 'only print what a collection would remove now')
    .option('--json', 'print JSON')
    .action(async (name: string, opts: { dryRun?: boolean; json?: boolean }) => {
      const r = await ctx
        .client()
        .request(opts.dryRun ? 'GET' : 'POST', `caches/${encodeURIComponent(name)}/gc`, gcResultSchema);
      if (opts.json) {
        ctx.io.stdout.write(`${JSON.stringify(r, null, 2)}\n`);
        return;
      }
      for (const p of r.paths)
        ctx.io.stdout.write(`${p.storePath}\t${p.reason}\t${formatBytes(p.fileSize)}\n`);
      for (const f of r.narFiles)
        ctx.io.stdout.write(`nar/${f.fileName}\tunused\t${formatBytes(f.fileSize)}\n`);
      const verb = r.dryRun ? 'would remove' : 'removed';
      ctx.io.stderr.write(
        `cache ${r.cache}: ${verb} ${r.paths.length} paths and ${r.narFiles.length} NAR files, ${r.dryRun ? 'freeing' : 'freed'} ${formatBytes(r.bytesFreed)}; kept ${r.keptPaths} paths (${formatBytes(r.bytesKept)}), ${r.rootPaths} of them for deployments and pins${r.spared > 0 ? `; ${r.spared} spared because they were used meanwhile` : ''}\n`,
      );
    });
  cache
    .command('pin')
    .description('keep a path and its closure whatever the retention and quota')
    .argument('<name>', 'cache name')
    .argument('<path>', 'store path the cache holds')
    .option('--until <date>', 'the pin lapses then (ISO 8601 date or time, such as 2027-01-31)')
    .action(async (name: string, path: string, opts: { until?: string }) => {
      if (!isStorePath(path)) {
        throw new CairnError(
          'INVALID_STORE_PATH',
          `Cannot pin a path: not a store path (/nix/store/<hash>-<name>) (${path})`,
        );
      }
      let expiresAt: string | undefined;
      if (opts.until !== undefined) {
        const t = Date.parse(opts.until);
        if (!/^\d{4}-\d{2}-\d{2}/.test(opts.until) || Number.isNaN(t)) {
          throw new CairnError(
            'INVALID_ARGUMENT',
            `Cannot use --until: expected a date such as 2027-01-31 or 2027-01-31T12:00:00Z (${opts.until})`,
          );
        }
        expiresAt = new Date(t).toISOString();
      }
      const pin = await ctx.client().request('POST', `caches/${encodeURIComponent(name)}/pins`, pinSchema, {
        storePath: path,
        ...(expiresAt ? { expiresAt } : {}),
      });
      ctx.io.stderr.write(
        `pinned ${pin.storePath} in cache ${name}${pin.expiresAt ? ` until ${pin.expiresAt}` : ''}\n`,
      );
    });
  cache
    .command('unpin')
    .description('remove a pin: the path is collected again once nothing needs it')
    .argument('<name>', 'cache name')
    .argument('<path>', 'pinned store path')
    .action(async (name: string, path: string) => {
      if (!isStorePath(path)) {
        throw new CairnError(
          'INVALID_STORE_PATH',
          `Cannot unpin a path: not a store path (/nix/store/<hash>-<name>) (${path})`,
        );
      }
      const base = path.slice('/nix/store/'.length);
      await ctx
        .client()
        .request('DELETE', `caches/${encodeURIComponent(name)}/pins/${encodeURIComponent(base)}`, null);
      ctx.io.stderr.write(`unpinned ${path} in cache ${name}\n`);
    });
  cache
    .command('pins')
    .description('list the pinned paths of a cache')
    .argument('<name>', 'cache name')
    .option('--json', 'print JSON')
    .action(async (name: string, opts: { json?: boolean }) => {
      const { pins } = await ctx
        .client()
        .request('GET', `caches/${encodeURIComponent(name)}/pins`, pinListSchema);
      if (opts.json) {
        ctx.io.stdout.write(`${JSON.stringify(pins, null, 2)}\n`);
        return;
      }
      ctx.io.stdout.write(
        formatTable(
          ['PATH', 'UNTIL', 'BY', 'PINNED'],
          pins.map((p) => [p.storePath, p.expiresAt ?? 'unpinned', p.createdBy, p.createdAt]),
        ),
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
