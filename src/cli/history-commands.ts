import type { Command } from 'commander';
import { sleep } from '../lib/backoff.ts';
import { CairnError } from '../lib/cairn-error.ts';
import { formatClosureDiff } from '../nix/closure-diff.ts';
import {
  type DeploymentInfo,
  deploymentDiffSchema,
  deploymentInfoSchema,
  deploymentListSchema,
  deploymentLogsSchema,
} from '../protocol/api-schemas.ts';
import { isFinalState } from '../protocol/deployment-state.ts';
import type { CommandContext } from './command-context.ts';
import { readDeployJson } from './deploy-activate.ts';
import { formatPlan, planExitCode, reportedNote } from './format-plan.ts';
import { formatTable } from './format-table.ts';
import { requestPlan } from './request-plan.ts';
import { forTerminal } from './terminal-text.ts';

function deploymentId(text: string, what: string): number {
  const id = Number(text);
  if (!Number.isSafeInteger(id) || id <= 0) {
    throw new CairnError('INVALID_ARGUMENT', `Cannot use ${what}: expected a deployment id (${text})`);
  }
  return id;
}

/** `cairn deploy list|show|logs|diff|plan`: deployment history, logs, closure diffs and plans. */
export function registerHistoryCommands(program: Command, ctx: CommandContext): void {
  const deploy =
    program.commands.find((c) => c.name() === 'deploy') ??
    program.command('deploy').description('deploy closures to agents, and run the agent');

  deploy
    .command('list')
    .description('list deployments, newest first')
    .option('--agent <name>', 'only the deployments of this agent')
    .option('--limit <n>', 'how many (1-1000)', '50')
    .option('--json', 'print JSON')
    .action(async (opts: { agent?: string; limit: string; json?: boolean }) => {
      const query = new URLSearchParams({ limit: opts.limit });
      if (opts.agent !== undefined) query.set('agent', opts.agent);
      const { deployments } = await ctx
        .client('CAIRN_ACTIVATE_TOKEN')
        .request('GET', `deployments?${query}`, deploymentListSchema);
      if (opts.json) {
        ctx.io.stdout.write(`${JSON.stringify(deployments, null, 2)}\n`);
        return;
      }
      ctx.io.stdout.write(
        formatTable(
          ['ID', 'ROLLOUT', 'AGENT', 'KIND', 'STATE', 'CREATED', 'STORE PATH'],
          deployments.map((d) => [
            String(d.id),
            String(d.rolloutId),
            d.agent,
            d.kind,
            d.state,
            d.createdAt,
            d.storePath,
          ]),
        ),
      );
    });

  deploy
    .command('show')
    .description('show one deployment: agent, store path, state, times, reason')
    .argument('<id>', 'deployment id')
    .option('--json', 'print JSON')
    .action(async (idText: string, opts: { json?: boolean }) => {
      const id = deploymentId(idText, '<id>');
      const d = await ctx
        .client('CAIRN_ACTIVATE_TOKEN')
        .request('GET', `deployments/${id}`, deploymentInfoSchema);
      if (opts.json) {
        ctx.io.stdout.write(`${JSON.stringify(d, null, 2)}\n`);
        return;
      }
      ctx.io.stdout.write(forTerminal(ctx.io.stdout, { keepNewlines: true })(describe(d)));
    });

  deploy
    .command('logs')
    .description("print a deployment's log; with --follow, keep printing until it ends")
    .argument('<id>', 'deployment id')
    .option('-f, --follow', 'wait for new lines until the deployment is over')
    .option('--timestamps', "prefix each line with the agent's time")
    .action(async (idText: string, opts: { follow?: boolean; timestamps?: boolean }) => {
      const id = deploymentId(idText, '<id>');
      const client = ctx.client('CAIRN_ACTIVATE_TOKEN');
      const stop = new AbortController();
      if (opts.follow) void ctx.io.untilStopped?.().then(() => stop.abort());
      // An agent's lines reach a terminal with their control characters shown, not run.
      const shown = forTerminal(ctx.io.stdout);
      let after = 0;
      for (;;) {
        // Read the state first: lines written before a final state are all there after it.
        const state = opts.follow
          ? (await client.request('GET', `deployments/${id}`, deploymentInfoSchema)).state
          : 'succeeded';
        for (;;) {
          const { lines } = await client.request(
            'GET',
            `deployments/${id}/logs?after=${after}`,
            deploymentLogsSchema,
          );
          for (const l of lines) {
            ctx.io.stdout.write(
              `${opts.timestamps ? `${new Date(l.t).toISOString()} ` : ''}${shown(l.text)}\n`,
            );
          }
          after = lines.at(-1)?.seq ?? after;
          // The server pages its answer: ask again until a short page.
          if (lines.length < 10_000) break;
        }
        if (!opts.follow || isFinalState(state) || stop.signal.aborted) return;
        await sleep(1000, stop.signal);
      }
    });

  deploy
    .command('diff')
    .description('show what changed between two deployments, package by package, as nvd does')
    .argument('<from>', 'deployment id of the before side')
    .argument('<to>', 'deployment id of the after side')
    .option('--json', 'print JSON')
    .action(async (fromText: string, toText: string, opts: { json?: boolean }) => {
      const from = deploymentId(fromText, '<from>');
      const to = deploymentId(toText, '<to>');
      const d = await ctx
        .client('CAIRN_ACTIVATE_TOKEN')
        .request('GET', `deployments/diff?from=${from}&to=${to}`, deploymentDiffSchema);
      if (opts.json) {
        ctx.io.stdout.write(`${JSON.stringify(d, null, 2)}\n`);
        return;
      }
      ctx.io.stdout.write(
        formatClosureDiff(d.diff, {
          before: `#${from} ${d.from.storePath}`,
          after: `#${to} ${d.to.storePath}`,
        }),
      );
      for (const [label, side] of [
        ['before', d.from],
        ['after', d.to],
      ] as const) {
        // A closure the caches hold whole is exact and verified; one they do not is as the
        // deployment's own agent reported it (not verified), or a lower bound.
        const reported = reportedNote(label, side);
        if (reported) ctx.io.stderr.write(`cairn: ${reported}\n`);
        if (side.missing > 0) {
          ctx.io.stderr.write(
            `cairn: the ${label} closure is incomplete: ${side.missing} path(s) are in no cache and not in its agent's report\n`,
          );
        }
      }
    });

  deploy
    .command('plan')
    .description(
      'show what deploy.json would change on each agent, asking the machines themselves, changing nothing',
    )
    .argument('<deploy.json>', 'the file deploy activate would take')
    .option(
      '--dry-activate',
      'also fetch each NixOS closure and run its switch-to-configuration dry-activate (the profile is not changed)',
    )
    .option(
      '--timeout <duration>',
      'how long to wait for the machines (default 30s, 4m with --dry-activate; at most 4m30s)',
    )
    .option('--json', 'print JSON')
    .addHelpText(
      'after',
      [
        '',
        'Token: CAIRN_ACTIVATE_TOKEN (or CAIRN_TOKEN), with the activate scope.',
        'Exit codes: 0 every machine answered and nothing stands in the way; 1 a machine lacks disk',
        'space, a path is in no cache or dry-activate failed (or the plan could not be made); 2 bad',
        'input or credentials; 3 some machine was not heard (offline, too old, timed out): its part is',
        "the server's estimate.",
      ].join('\n'),
    )
    .action(async (file: string, opts: { json?: boolean; dryActivate?: boolean; timeout?: string }) => {
      const body = await readDeployJson(file);
      const plan = await requestPlan(ctx.client('CAIRN_ACTIVATE_TOKEN'), body, opts);
      if (opts.json) ctx.io.stdout.write(`${JSON.stringify(plan, null, 2)}\n`);
      else ctx.io.stdout.write(forTerminal(ctx.io.stdout, { keepNewlines: true })(formatPlan(plan)));
      ctx.setExitCode(planExitCode(plan));
    });
}

function describe(d: DeploymentInfo): string {
  const rows: Array<[string, string]> = [
    ['Deployment', String(d.id)],
    ['Rollout', String(d.rolloutId)],
    ['Agent', d.agent],
    ['Kind', d.kind],
    ['State', d.state],
    ['Step', d.step ?? '-'],
    ['Store path', d.storePath],
    ['Created', d.createdAt],
    ['Started', d.startedAt ?? '-'],
    ['Finished', d.finishedAt ?? '-'],
  ];
  if (d.reason) rows.push(['Reason', d.reason]);
  if (d.rebootRequired) rows.push(['Reboot', 'required']);
  const width = Math.max(...rows.map(([k]) => k.length));
  return rows.map(([k, v]) => `${`${k}:`.padEnd(width + 1)} ${v}\n`).join('');
}
