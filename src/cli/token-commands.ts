import type { Command } from 'commander';
import { CairnError } from '../lib/cairn-error.ts';
import { createdTokenSchema, tokenListSchema } from '../protocol/api-schemas.ts';
import { parseTokenScope } from '../protocol/token-scope.ts';
import type { CommandContext } from './command-context.ts';
import { formatTable } from './format-table.ts';

/** Parses `30d`, `12h`, `90m` or an ISO date into an ISO timestamp. */
export function parseExpiry(text: string, now: number): string {
  const m = /^(\d+)([dhm])$/.exec(text);
  if (m) {
    const unit = { d: 86_400_000, h: 3_600_000, m: 60_000 }[m[2] as 'd' | 'h' | 'm'];
    return new Date(now + Number(m[1]) * unit).toISOString();
  }
  const t = Date.parse(text);
  if (Number.isNaN(t) || t <= now) {
    throw new CairnError(
      'INVALID_ARGUMENT',
      `Cannot use --expires: expected a duration like 30d, 12h, 90m or a future date (${text})`,
    );
  }
  return new Date(t).toISOString();
}

/** `cairn token create|list|revoke`. */
export function registerTokenCommands(program: Command, ctx: CommandContext): void {
  const token = program.command('token').description('manage API tokens');
  token
    .command('create')
    .description('create a token; prints the secret once, on stdout')
    .requiredOption(
      '--scope <scope...>',
      'admin, cache:<name>:push, cache:<name>:pull, activate[:<agent>,...], agent:<name> or metrics (repeatable)',
    )
    .option('--name <name>', 'a name to recognise the token by (default: its scopes)')
    .option('--expires <when>', 'expiry: a duration (30d, 12h, 90m) or a date')
    .action(async (opts: { scope: string[]; name?: string; expires?: string }) => {
      for (const s of opts.scope) {
        const parsed = parseTokenScope(s);
        if ('error' in parsed)
          throw new CairnError('INVALID_ARGUMENT', `Cannot use --scope: ${parsed.error}`);
      }
      const body: Record<string, unknown> = { name: opts.name ?? opts.scope.join(' '), scopes: opts.scope };
      if (opts.expires !== undefined) body.expiresAt = parseExpiry(opts.expires, Date.now());
      const created = await ctx.client().request('POST', 'tokens', createdTokenSchema, body);
      ctx.io.stdout.write(`${created.token}\n`);
      ctx.io.stderr.write(`created token ${created.name} (id ${created.id}); it is shown only this once\n`);
    });
  token
    .command('list')
    .description('list tokens (never their secrets)')
    .option('--json', 'print JSON')
    .action(async (opts: { json?: boolean }) => {
      const { tokens } = await ctx.client().request('GET', 'tokens', tokenListSchema);
      if (opts.json) {
        ctx.io.stdout.write(`${JSON.stringify(tokens, null, 2)}\n`);
        return;
      }
      ctx.io.stdout.write(
        formatTable(
          ['ID', 'NAME', 'SCOPES', 'LAST USED', 'STATE'],
          tokens.map((t) => [
            t.id,
            t.name,
            t.scopes.join(' '),
            t.lastUsedAt ?? 'never',
            t.revokedAt
              ? 'revoked'
              : t.expiresAt && Date.parse(t.expiresAt) < Date.now()
                ? 'expired'
                : 'active',
          ]),
        ),
      );
    });
  token
    .command('revoke')
    .description('revoke a token by id or name; it stops working at once')
    .argument('<id-or-name>', 'token id or name')
    .action(async (id: string) => {
      await ctx.client().request('DELETE', `tokens/${encodeURIComponent(id)}`, null);
      ctx.io.stderr.write(`revoked token ${id}\n`);
    });
}
