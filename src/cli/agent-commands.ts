import type { Command } from 'commander';
import { agentListSchema, createdAgentSchema } from '../protocol/api-schemas.ts';
import type { CommandContext } from './command-context.ts';
import { formatTable } from './format-table.ts';

/** `cairn agent create|list|revoke|token`. */
export function registerAgentCommands(program: Command, ctx: CommandContext): void {
  const agent = program.command('agent').description('manage agents (the machines Cairn deploys to)');
  agent
    .command('create')
    .description("create an agent; prints its token (for the machine's CAIRN_AGENT_TOKEN), once, on stdout")
    .argument('<name>', 'agent name: a-z, 0-9, ".", "_", "-"')
    .action(async (name: string) => {
      const created = await ctx.client().request('POST', 'agents', createdAgentSchema, { name });
      ctx.io.stdout.write(`${created.token}\n`);
      ctx.io.stderr.write(
        `created agent ${name}; on the machine run: CAIRN_AGENT_TOKEN=<token> cairn deploy agent ${name}\n`,
      );
    });
  agent
    .command('list')
    .description('list agents: online, last seen, what each runs')
    .option('--json', 'print JSON')
    .action(async (opts: { json?: boolean }) => {
      const { agents } = await ctx.client().request('GET', 'agents', agentListSchema);
      if (opts.json) {
        ctx.io.stdout.write(`${JSON.stringify(agents, null, 2)}\n`);
        return;
      }
      ctx.io.stdout.write(
        formatTable(
          ['NAME', 'ONLINE', 'LAST SEEN', 'GEN', 'SYSTEM', 'AGENT', 'STORE PATH'],
          agents.map((a) => [
            a.name,
            a.online ? 'yes' : 'no',
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
