import type { Command } from 'commander';
import { CairnError } from '../lib/cairn-error.ts';
import {
  compileNamePattern,
  createdEnrolTokenSchema,
  enrolTokenListSchema,
  MAX_ENROL_USES,
} from '../protocol/enrol-schemas.ts';
import type { CommandContext } from './command-context.ts';
import { formatTable } from './format-table.ts';
import { parseExpiry } from './token-commands.ts';

/** Parses `--uses`: a whole number from 1. */
function parseUses(text: string): number {
  const n = Number(text);
  if (!/^[0-9]+$/.test(text) || !Number.isSafeInteger(n) || n < 1 || n > MAX_ENROL_USES) {
    throw new CairnError(
      'INVALID_ARGUMENT',
      `Cannot use --uses: expected a whole number from 1 to ${MAX_ENROL_USES} (${text})`,
    );
  }
  return n;
}

/** `cairn agent enrol-token create|list|revoke`, under `cairn agent`. */
export function registerEnrolTokenCommands(agent: Command, ctx: CommandContext): void {
  const enrol = agent
    .command('enrol-token')
    .description('manage enrolment tokens: one secret that registers many machines, each as its own agent');
  enrol
    .command('create')
    .description('create an enrolment token; prints the secret once, on stdout')
    .option('--uses <n>', 'how many machines it may enrol (default: 1)')
    .option('--expires <when>', 'expiry: a duration (7d, 12h, 90m) or a future date (default: never)')
    .option(
      '--tag <tag>',
      'give every agent it enrols this tag (repeat the flag for several)',
      (tag: string, tags: string[]) => [...tags, tag],
      [] as string[],
    )
    .option(
      '--name-pattern <regex>',
      'a regular expression every enrolled name must match in full, such as "web-[0-9]+" (at most 200 characters)',
    )
    .option('--require-approval', 'enrolled agents receive no deployment until: cairn agent approve NAME')
    .addHelpText(
      'after',
      '\nOn each machine: CAIRN_SERVER=<url> CAIRN_ENROL_TOKEN=<token> cairn deploy agent [NAME] --enrol\n(NAME defaults to the hostname). The agent stores its own token in its state dir and never enrols\nagain; the enrolment token can do nothing else. Token: CAIRN_TOKEN, with the admin scope.\nExit codes: 0 created; 2 an invalid flag or bad credentials.',
    )
    .action(
      async (opts: {
        uses?: string;
        expires?: string;
        tag: string[];
        namePattern?: string;
        requireApproval?: boolean;
      }) => {
        const body: Record<string, unknown> = { uses: opts.uses === undefined ? 1 : parseUses(opts.uses) };
        if (opts.expires !== undefined) body.expiresAt = parseExpiry(opts.expires, Date.now());
        if (opts.tag.length > 0) body.tags = opts.tag;
        if (opts.namePattern !== undefined) {
          const compiled = compileNamePattern(opts.namePattern);
          if ('error' in compiled) {
            throw new CairnError(
              'INVALID_ARGUMENT',
              `Cannot use --name-pattern: it ${compiled.error} (${opts.namePattern})`,
            );
          }
          body.namePattern = opts.namePattern;
        }
        if (opts.requireApproval) body.requireApproval = true;
        const client = ctx.client();
        const created = await client.request('POST', 'enrol-tokens', createdEnrolTokenSchema, body);
        ctx.io.stdout.write(`${created.token}\n`);
        const ws = client.workspace !== 'default' ? ` CAIRN_WORKSPACE=${client.workspace}` : '';
        ctx.io.stderr.write(
          [
            `created enrolment token ${created.id} for ${created.maxUses} ${created.maxUses === 1 ? 'machine' : 'machines'}${created.expiresAt ? `, until ${created.expiresAt}` : ''}; it is shown only this once.`,
            'On each machine, run:',
            `  CAIRN_SERVER=${client.server}${ws} CAIRN_ENROL_TOKEN=<token> cairn deploy agent --enrol`,
            '',
          ].join('\n'),
        );
      },
    );
  enrol
    .command('list')
    .description('list enrolment tokens (never their secrets): uses, expiry, state')
    .option('--json', 'print JSON')
    .action(async (opts: { json?: boolean }) => {
      const { enrolTokens } = await ctx.client().request('GET', 'enrol-tokens', enrolTokenListSchema);
      if (opts.json) {
        ctx.io.stdout.write(`${JSON.stringify(enrolTokens, null, 2)}\n`);
        return;
      }
      ctx.io.stdout.write(
        formatTable(
          ['ID', 'USES', 'EXPIRES', 'TAGS', 'NAME PATTERN', 'APPROVAL', 'STATE'],
          enrolTokens.map((t) => [
            String(t.id),
            `${t.uses}/${t.maxUses}`,
            t.expiresAt ?? 'never',
            t.tags.length > 0 ? t.tags.join(',') : '-',
            t.namePattern ?? '-',
            t.requireApproval ? 'required' : '-',
            t.state,
          ]),
        ),
      );
    });
  enrol
    .command('revoke')
    .description(
      'revoke an enrolment token: it enrols no more machines (those it enrolled keep their tokens)',
    )
    .argument('<id>', 'enrolment token id, as listed')
    .action(async (id: string) => {
      await ctx.client().request('DELETE', `enrol-tokens/${encodeURIComponent(id)}`, null);
      ctx.io.stderr.write(`revoked enrolment token ${id}\n`);
    });
}
