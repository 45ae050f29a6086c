import type { Command } from 'commander';
import { agentInfoSchema, agentListSchema, createdAgentSchema } from '../protocol/api-schemas.ts';
import type { CommandContext } from './command-context.ts';
import { registerEnrolTokenCommands } from './enrol-token-commands.ts';
import { formatTable } from './format-table.ts';

/** `cairn agent create|list|tag|revoke|token`. */
export function registerAgentCommands(program: Command, ctx: CommandContext): void {
  const agent = program.command('agent').description('manage agents (the machines Cairn deploys to)');
  agent
    .command('create')
    .description("create an agent; prints its token (for the machine's CAIRN_AGENT_TOKEN), once, on stdout")
    .argument('<name>', 'agent name: a-z, 0-9, ".", "_", "-"')
    // One tag per flag, as `deploy activate --agent`: a variadic option would swallow NAME.
    .option(
      '--tag <tag>',
      'give the agent this tag, such as canary (repeat the flag for several; at most 32)',
      (tag: string, tags: string[]) => [...tags, tag],
      [] as string[],
    )
    .action(async (name: string, opts: { tag: string[] }) => {
      const body = opts.tag.length > 0 ? { name, tags: opts.tag } : { name };
      const client = ctx.client();
      const created = await client.request('POST', 'agents', createdAgentSchema, body);
      ctx.io.stdout.write(`${created.token}\n`);
      ctx.io.stderr.write(agentSetUpHint(name, client.server, client.workspace));
    });
  agent
    .command('list')
    .description('list agents: tags, online, last seen, what each runs')
    .option('--json', 'print JSON')
    .action(async (opts: { json?: boolean }) => {
      const { agents } = await ctx.client().request('GET', 'agents', agentListSchema);
      if (opts.json) {
        ctx.io.stdout.write(`${JSON.stringify(agents, null, 2)}\n`);
        return;
      }
      ctx.io.stdout.write(
        formatTable(
          ['NAME', 'TAGS', 'ONLINE', 'LAST SEEN', 'GEN', 'SYSTEM', 'AGENT', 'STORE PATH'],
          agents.map((a) => [
            a.name,
            a.tags.length > 0 ? a.tags.join(',') : '-',
            `${a.online ? 'yes' : 'no'}${a.pendingApproval ? ' (pending approval)' : ''}`,
            a.lastSeenAt ?? 'never',
            a.generation === null ? '-' : String(a.generation),
            a.system ?? '-',
            a.agentVersion ?? '-',
            a.storePath ?? '-',
          ]),
        ),
      );
    });
  agent
    .command('tag')
    .description('add tags to an agent, or remove them with --remove; rollout policies pick canaries by tag')
    .argument('<name>', 'agent name')
    .argument('<tag...>', 'tags: a-z, 0-9, ".", "_", "-", as agent names (at most 32 per agent)')
    .option(
      '--remove',
      'remove these tags instead of adding them (removing a tag the agent lacks is no error)',
    )
    .addHelpText(
      'after',
      '\nExamples:\n  cairn agent tag web1 canary eu-west\n  cairn agent tag web1 --remove canary\nRollout policies select agents by tag: "canary": ["tag:canary"] (docs/rollouts.md).\nToken: CAIRN_TOKEN, with the admin scope.\nExit codes: 0 done; 1 the server failed; 2 an invalid tag, more than 32 tags, or bad credentials.',
    )
    .action(async (name: string, tags: string[], opts: { remove?: boolean }) => {
      const agentInfo = await ctx
        .client()
        .request(
          'PATCH',
          `agents/${encodeURIComponent(name)}/tags`,
          agentInfoSchema,
          opts.remove ? { remove: tags } : { add: tags },
        );
      ctx.io.stderr.write(
        `${opts.remove ? 'removed' : 'added'} ${tags.length === 1 ? 'tag' : 'tags'} ${tags.join(', ')}; agent ${name} now has ${agentInfo.tags.length > 0 ? `tags ${agentInfo.tags.join(', ')}` : 'no tags'}\n`,
      );
    });
  agent
    .command('revoke')
    .description("revoke an agent's token: its connection closes at once and reconnects are refused")
    .argument('<name>', 'agent name')
    .action(async (name: string) => {
      await ctx.client().request('DELETE', `agents/${encodeURIComponent(name)}/token`, null);
      ctx.io.stderr.write(
        `revoked the token of agent ${name}; give it a new one with: cairn agent token ${name}\n`,
      );
    });
  agent
    .command('approve')
    .description(
      'approve an agent that enrolled with a token requiring approval: it then receives deployments',
    )
    .argument('<name>', 'agent name')
    .action(async (name: string) => {
      await ctx.client().request('POST', `agents/${encodeURIComponent(name)}/approve`, agentInfoSchema, {});
      ctx.io.stderr.write(`approved agent ${name}; it now receives its deployments\n`);
    });
  registerEnrolTokenCommands(agent, ctx);
  agent
    .command('token')
    .description('issue a new token for an existing agent (the old one stops working); prints it on stdout')
    .argument('<name>', 'agent name')
    .action(async (name: string) => {
      const created = await ctx
        .client()
        .request('POST', `agents/${encodeURIComponent(name)}/token`, createdAgentSchema, {});
      ctx.io.stdout.write(`${created.token}\n`);
    });
}

/**
 * What to do next with a new agent, on stderr (stdout holds only the token, for a redirect):
 * the one command for any machine, and the NixOS module settings.
 */
export function agentSetUpHint(name: string, server: string, workspace: string | undefined): string {
  const ws = workspace && workspace !== 'default' ? workspace : undefined;
  return [
    `created agent ${name}; its token is on stdout, shown this once.`,
    'On the machine, run:',
    `  CAIRN_SERVER=${server}${ws ? ` CAIRN_WORKSPACE=${ws}` : ''} CAIRN_AGENT_TOKEN=<token> cairn deploy agent ${name}`,
    'or, on NixOS, put the token in a file outside the Nix store (agenix, sops-nix) and add:',
    '  services.cairn-agent = {',
    '    enable = true;',
    `    name = "${name}";`,
    `    serverUrl = "${server}";`,
    ...(ws ? [`    workspace = "${ws}";`] : []),
    '    tokenFile = "/run/secrets/cairn-agent-token";',
    '  };',
    '',
  ].join('\n');
}
