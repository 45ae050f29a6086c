import { hostname } from 'node:os';
import { join } from 'node:path';
import type { Command } from 'commander';
import { CairnError } from '../lib/cairn-error.ts';
import { rolloutInfoSchema } from '../protocol/api-schemas.ts';
import { NAME_PATTERN } from '../protocol/token-scope.ts';
import type { CommandContext } from './command-context.ts';
import { deployActivate } from './deploy-activate.ts';
import { agentToken } from './enrolled-token.ts';
import { followRollout } from './follow-rollout.ts';
import { parseDuration } from './parse-duration.ts';

/**
 * The agent's default state directory, its own on the machine: /var/lib/cairn-agent/NAME as
 * root, else $XDG_STATE_HOME/cairn-agent/NAME (~/.local/state/cairn-agent/NAME).
 */
function defaultAgentStateDir(name: string, env: NodeJS.ProcessEnv): string {
  if (process.getuid?.() === 0) return join('/var/lib/cairn-agent', name);
  return join(env.XDG_STATE_HOME || join(env.HOME ?? '/tmp', '.local', 'state'), 'cairn-agent', name);
}

/** `cairn deploy agent|activate`. */
export function registerDeployCommands(program: Command, ctx: CommandContext): void {
  const deploy = program.command('deploy').description('deploy closures to agents, and run the agent');

  deploy
    .command('activate')
    .description(
      "deploy: one deployment per agent in deploy.json (Cachix Deploy's format), following their logs",
    )
    .argument(
      '<deploy.json>',
      'file naming each agent\'s store path: {"agents": {"<name>": "/nix/store/..."}}',
    )
    .option(
      '--rollout <policy.json>',
      "stage the rollout with this policy file (canaries, batches, bake...), keeping deploy.json Cachix's",
    )
    .option('--async', 'create the deployments, print the rollout id and return at once')
    // One name per flag: a variadic option would take DEPLOY.JSON after it as another name.
    .option(
      '--agent <name>',
      'deploy only to this agent of the file (repeat the flag for several)',
      (name: string, names: string[]) => [...names, name],
      [] as string[],
    )
    .option(
      '--timeout <duration>',
      'stop waiting after this long (such as 30m); a rollout not over by then makes the exit code 3',
    )
    .option('--plan', 'print the plan (as deploy plan does) and ask for confirmation on the terminal first')
    .option('--yes', 'with --plan: activate without asking (required when stdin is not a terminal)')
    .addHelpText(
      'after',
      [
        '',
        'Token: CAIRN_ACTIVATE_TOKEN (or CAIRN_TOKEN), with the activate scope.',
        'Exit codes: 0 every agent succeeded (staged: the rollout succeeded); 1 an agent failed or was',
        'rolled back (staged: the rollout failed, was aborted or superseded); 2 bad input or credentials,',
        'nothing created (also --plan without a terminal and without --yes); 3 not over when --timeout',
        'expired (it goes on: cairn deploy follow ROLLOUT). --plan answered with anything but y: 1, nothing created.',
        'Staged rollouts: see docs/rollouts.md.',
      ].join('\n'),
    )
    .action(
      async (
        file: string,
        opts: {
          async?: boolean;
          agent?: string[];
          timeout?: string;
          rollout?: string;
          plan?: boolean;
          yes?: boolean;
        },
      ) => {
        const timeoutMs = opts.timeout === undefined ? undefined : parseDuration(opts.timeout, '--timeout');
        const code = await deployActivate(ctx.client('CAIRN_ACTIVATE_TOKEN'), ctx.io, {
          file,
          rolloutFile: opts.rollout,
          agents: opts.agent ?? [],
          async: opts.async === true,
          timeoutMs,
          plan: opts.plan === true,
          yes: opts.yes === true,
        });
        ctx.setExitCode(code);
      },
    );

  deploy
    .command('rollback')
    .description(
      'roll an agent back to what it ran before (or to deployment --to): itself a deployment, with logs',
    )
    .argument('<agent>', 'agent name')
    .option('--to <deployment>', 'the deployment whose store path to go back to')
    .option('--async', 'create the deployment, print the rollout id and return at once')
    .option('--timeout <duration>', 'stop waiting after this long (such as 30m); exit code 3 if not over')
    .addHelpText(
      'after',
      '\nExit codes: 0 the rollback succeeded; 1 it failed; 2 bad input or credentials; 3 not over when\n--timeout expired (it goes on: cairn deploy follow ROLLOUT).',
    )
    .action(async (agentName: string, opts: { to?: string; async?: boolean; timeout?: string }) => {
      const to = opts.to === undefined ? undefined : Number(opts.to);
      if (to !== undefined && (!Number.isSafeInteger(to) || to <= 0)) {
        throw new CairnError('INVALID_ARGUMENT', `Cannot use --to: expected a deployment id (${opts.to})`);
      }
      const timeoutMs = opts.timeout === undefined ? undefined : parseDuration(opts.timeout, '--timeout');
      const client = ctx.client('CAIRN_ACTIVATE_TOKEN');
      const rollout = await client.request(
        'POST',
        `agents/${encodeURIComponent(agentName)}/rollback`,
        rolloutInfoSchema,
        to === undefined ? {} : { to },
      );
      ctx.setExitCode(
        await followRollout(client, ctx.io, rollout, { async: opts.async === true, timeoutMs }),
      );
    });

  deploy
    .command('agent')
    .description('run the agent: keep a connection to the server and deploy what it is told to')
    .argument(
      '[name]',
      'this agent\'s name (created with "cairn agent create"); with --enrol, the machine\'s hostname by default',
    )
    .argument('[profile]', 'profile name under /nix/var/nix/profiles, or an absolute path', 'system')
    .option(
      '--state-dir <dir>',
      'where the agent keeps its lock, GC roots and temporary files (env: CAIRN_AGENT_STATE_DIR)',
    )
    .option(
      '--enrol',
      'register this machine as a new agent with an enrolment token (CAIRN_ENROL_TOKEN), once: its own token is stored in the state dir and used from then on',
    )
    .option('--enrol-token-file <file>', 'read the enrolment token from this file (implies --enrol)')
    .option(
      '--bootstrap',
      "first install: stop once the first deployment succeeded and the deployed system's own agent took the agent's lock (exit 0); go on as the agent if none does",
    )
    .option(
      '--bootstrap-wait <duration>',
      "with --bootstrap: how long to wait for the deployed system's agent to take over",
      '30s',
    )
    .addHelpText(
      'after',
      "\nEnvironment: CAIRN_SERVER (server URL), CAIRN_AGENT_TOKEN (this agent's token), CAIRN_ENROL_TOKEN\n(an enrolment token, for --enrol), CAIRN_AGENT_PRE_SWITCH_CHECKS (fail, the default, or boot: what a\nNixOS switch whose pre-switch checks fail does), CAIRN_AGENT_SPECIALISATION (the NixOS\nspecialisation to switch to; unset: the running one), CAIRN_AGENT_PRIMARY_USER (the user a legacy\nnix-darwin activate-user runs as), HOME_MANAGER_BACKUP_EXT (Home Manager moves a file in the way to\nFILE.EXT), CAIRN_AGENT_HEALTH_HTTP (any, the default, or loopback: which URLs HTTP health checks\nmay reach); see docs/activation.md. Enrolment and --bootstrap: docs/getting-started.md.",
    )
    .action(
      async (
        nameArg: string | undefined,
        profileArg: string,
        opts: {
          stateDir?: string;
          enrol?: boolean;
          enrolTokenFile?: string;
          bootstrap?: boolean;
          bootstrapWait: string;
        },
      ) => {
        const enrol = opts.enrol === true || opts.enrolTokenFile !== undefined;
        const name = nameArg ?? (enrol ? hostname().toLowerCase() : undefined);
        if (name === undefined) {
          throw new CairnError(
            'INVALID_ARGUMENT',
            'Cannot start the agent: give its name (cairn deploy agent NAME), or enrol under the hostname with --enrol',
          );
        }
        if (!NAME_PATTERN.test(name)) {
          throw new CairnError(
            'INVALID_ARGUMENT',
            nameArg === undefined
              ? `Cannot enrol: the hostname is not a valid agent name (${name}); give one: cairn deploy agent NAME --enrol`
              : `Cannot start the agent: invalid agent name (${name})`,
          );
        }
        const handoverMs = parseDuration(opts.bootstrapWait, '--bootstrap-wait');
        const client = ctx.client('CAIRN_AGENT_TOKEN');
        const stateDir =
          opts.stateDir ?? ctx.env.CAIRN_AGENT_STATE_DIR ?? defaultAgentStateDir(name, ctx.env);
        const log = (line: string) => ctx.io.stderr.write(`${new Date().toISOString()} ${line}\n`);
        const token = await agentToken({
          name,
          stateDir,
          env: ctx.env,
          server: client.server,
          workspace: client.workspace,
          enrol: enrol ? { tokenFile: opts.enrolTokenFile } : undefined,
          log,
        });
        if (!ctx.io.daemons) throw new Error('cairn deploy agent: this CLI was built without the agent');
        const stop = new AbortController();
        void ctx.io.untilStopped?.().then((signal) => {
          ctx.io.stderr.write(`cairn agent: ${signal}, stopping\n`);
          stop.abort();
        });
        const code = await ctx.io.daemons.runAgent(
          {
            name,
            server: client.server,
            token,
            profile: profileArg,
            stateDir,
            env: ctx.env,
            log,
            ...(opts.bootstrap ? { bootstrap: { handoverMs } } : {}),
          },
          stop.signal,
        );
        ctx.setExitCode(code);
      },
    );
}
