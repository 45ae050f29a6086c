import type { Command } from 'commander';
import { CairnError } from '../lib/cairn-error.ts';
import { type RolloutInfo, rolloutInfoSchema } from '../protocol/api-schemas.ts';
import type { CommandContext } from './command-context.ts';
import { describeRollout, stateLine } from './describe-rollout.ts';
import { followRollout } from './follow-rollout.ts';
import { parseDuration } from './parse-duration.ts';
import { forTerminal } from './terminal-text.ts';

/** A rollout id from the command line: a positive whole number. */
export function rolloutId(text: string): number {
  const id = Number(text);
  if (!/^\d+$/.test(text.trim()) || !Number.isSafeInteger(id) || id <= 0) {
    throw new CairnError(
      'INVALID_ARGUMENT',
      `Cannot use ROLLOUT: expected a rollout id, a positive whole number (${text})`,
    );
  }
  return id;
}

/** What an operation leaves: the rollout's state and why it waits, one line each. */
function afterOperation(r: RolloutInfo): string {
  if (!r.staged) return `rollout ${r.id}: not staged\n`;
  return `${stateLine(r.id, r.staged)}\n${r.staged.waiting ? `waiting: ${r.staged.waiting}\n` : ''}`;
}

const OPERATION_HELP =
  '\nToken: CAIRN_ACTIVATE_TOKEN (or CAIRN_TOKEN), allowed to deploy to every agent of the rollout.\nExit codes: 0 done; 1 the rollout is not staged or its state does not allow this (CONFLICT: the\nmessage names its state; nothing changed); 2 bad input or credentials.';

/**
 * `cairn deploy pause|resume|promote|abort|status|follow ROLLOUT`: steer and watch a staged
 * rollout through the API; each operation is audited by the server.
 */
export function registerRolloutCommands(program: Command, ctx: CommandContext): void {
  const deploy =
    program.commands.find((c) => c.name() === 'deploy') ??
    program.command('deploy').description('deploy closures to agents, and run the agent');

  const operation = (
    name: 'pause' | 'resume' | 'promote' | 'abort',
    description: string,
    configure: (cmd: Command) => Command,
    body: (opts: Record<string, unknown>) => object | undefined,
  ) =>
    configure(
      deploy
        .command(name)
        .description(description)
        .argument('<rollout>', 'rollout id (deploy activate prints it)'),
    )
      .addHelpText('after', OPERATION_HELP)
      .action(async (idText: string, opts: Record<string, unknown>) => {
        const id = rolloutId(idText);
        const r = await ctx
          .client('CAIRN_ACTIVATE_TOKEN')
          .request('POST', `rollouts/${id}/${name}`, rolloutInfoSchema, body(opts));
        ctx.io.stdout.write(afterOperation(r));
      });

  operation(
    'pause',
    'pause a staged rollout: nothing more is dispatched and no deadline runs until resume',
    (c) => c,
    () => undefined,
  );
  operation(
    'resume',
    'resume a paused staged rollout (failures that paused it are accepted; the threshold counts anew)',
    (c) => c,
    () => undefined,
  );
  operation(
    'promote',
    "open a staged rollout's next batch now, not waiting for the open one or a manual gate (--full: all)",
    (c) => c.option('--full', 'open every remaining batch at once'),
    (o) => (o.full ? { full: true } : undefined),
  );
  operation(
    'abort',
    'abort a staged rollout: agents not yet dispatched are cancelled (--revert: switched ones go back)',
    (c) => c.option('--revert', 'also roll back the agents this rollout switched, to what they ran before'),
    (o) => (o.revert ? { revert: true } : undefined),
  );

  deploy
    .command('status')
    .description(
      'show where a rollout stands: state, why it waits, each batch, the failure threshold, each agent',
    )
    .argument('<rollout>', 'rollout id')
    .option('--json', 'print JSON (the API\'s rollout, with its "staged" status)')
    .action(async (idText: string, opts: { json?: boolean }) => {
      const id = rolloutId(idText);
      const r = await ctx.client('CAIRN_ACTIVATE_TOKEN').request('GET', `rollouts/${id}`, rolloutInfoSchema);
      ctx.io.stdout.write(
        opts.json
          ? `${JSON.stringify(r, null, 2)}\n`
          : forTerminal(ctx.io.stdout, { keepNewlines: true })(describeRollout(r)),
      );
    });

  deploy
    .command('follow')
    .description('follow a rollout already created, as deploy activate does: logs, batches, summary')
    .argument('<rollout>', 'rollout id')
    .option('--timeout <duration>', 'stop waiting after this long (such as 30m); exit code 3 if not over')
    .addHelpText(
      'after',
      '\nExit codes: 0 the rollout succeeded; 1 it failed, was aborted or superseded (or, not staged, an\nagent failed); 2 bad input or credentials; 3 still running or paused when --timeout expired.',
    )
    .action(async (idText: string, opts: { timeout?: string }) => {
      const id = rolloutId(idText);
      const timeoutMs = opts.timeout === undefined ? undefined : parseDuration(opts.timeout, '--timeout');
      const client = ctx.client('CAIRN_ACTIVATE_TOKEN');
      const r = await client.request('GET', `rollouts/${id}`, rolloutInfoSchema);
      ctx.setExitCode(await followRollout(client, ctx.io, r, { async: false, timeoutMs }));
    });
}
