import type { Command } from 'commander';
import { auditListSchema } from '../protocol/api-schemas.ts';
import type { CommandContext } from './command-context.ts';
import { formatTable } from './format-table.ts';

/** `cairn audit`: who created, revoked, deployed, rolled back and pushed, from where, when. */
export function registerAuditCommand(program: Command, ctx: CommandContext): void {
  program
    .command('audit')
    .description('show the audit log: who did what, from which address, when (newest first)')
    .option('--limit <n>', 'entries to show (1-1000)', '50')
    .option('--json', 'print JSON')
    .action(async (opts: { limit: string; json?: boolean }) => {
      const { entries } = await ctx
        .client()
        .request('GET', `audit?limit=${encodeURIComponent(opts.limit)}`, auditListSchema);
      if (opts.json) {
        ctx.io.stdout.write(`${JSON.stringify(entries, null, 2)}\n`);
        return;
      }
      ctx.io.stdout.write(
        formatTable(
          ['TIME', 'TOKEN', 'ADDRESS', 'ACTION', 'TARGET'],
          entries.map((e) => [e.at, e.tokenName ?? '-', e.address ?? '-', e.action, e.target]),
        ),
      );
    });
}
