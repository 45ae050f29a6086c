import { sleep } from '../lib/backoff.ts';
import { CairnError } from '../lib/cairn-error.ts';
import {
  type RolloutInfo,
  rolloutInfoSchema,
  rolloutLogEventSchema,
  rolloutStateEventSchema,
  stagedRolloutSchema,
} from '../protocol/api-schemas.ts';
import { isFinalState } from '../protocol/deployment-state.ts';
import { parseOrThrow } from '../protocol/parse-or-throw.ts';
import { isFinalRolloutState } from '../protocol/rollout-policy.ts';
import type { ApiClient } from './api-client.ts';
import { errorFromResponse } from './api-client.ts';
import type { CliIo } from './command-context.ts';
import { deploymentTable, plural } from './describe-rollout.ts';
import { readSse } from './read-sse.ts';
import { StagedProgress } from './staged-progress.ts';
import { forTerminal } from './terminal-text.ts';

/** An event that does not fit its schema breaks the stream like a lost connection: it is picked up again. */
const EVENT = { action: "read the rollout's events", whole: '(event)', code: 'COMMAND_FAILED' } as const;

/**
 * Exit codes of a followed rollout: it succeeded; it failed (or was aborted or superseded, or an
 * agent of a rollout that is not staged failed); it was still going when `--timeout` expired.
 * Bad input (2) is raised as an error before anything is followed.
 */
export const FOLLOW_EXIT = { succeeded: 0, failed: 1, unfinished: 3 } as const;

/**
 * Follows a rollout to its end (or prints its id with `async`): every agent's log prefixed with
 * its name, a line per batch and per change of what a staged rollout waits for (on stderr), then
 * a summary; resolves to the exit code ({@link FOLLOW_EXIT}).
 */
export async function followRollout(
  client: ApiClient,
  io: CliIo,
  rollout: RolloutInfo,
  options: { async: boolean; timeoutMs: number | undefined },
): Promise<number> {
  const staged = rollout.staged ?? null;
  if (options.async) {
    io.stdout.write(`${rollout.id}\n`);
    io.stderr.write(
      `rollout ${rollout.id}: ${rollout.deployments.length} deployment(s)${staged ? ` in ${plural(staged.batches.length, 'batch')}` : ''}; follow it with: cairn deploy follow ${rollout.id} (or at ${rollout.url})\n`,
    );
    return FOLLOW_EXIT.succeeded;
  }
  const names = rollout.deployments.map((d) => d.agent).join(', ');
  io.stderr.write(
    staged
      ? `rollout ${rollout.id}: staged over ${plural(staged.batches.length, 'batch')} (${staged.batches.map((b) => `${b.label}: ${plural(b.agents, 'agent')}`).join(', ')}) to ${names}\n`
      : `rollout ${rollout.id}: deploying to ${names}\n`,
  );
  const progress = staged ? new StagedProgress(rollout.id, rollout.deployments) : undefined;
  // A staged rollout's reasons may quote an agent's words.
  const shownOnStderr = forTerminal(io.stderr);
  const print = (lines: readonly string[]) => {
    for (const line of lines) io.stderr.write(`${shownOnStderr(line)}\n`);
  };
  if (progress && staged) print(progress.update(staged));
  // Agents' text (log lines, reasons) reaches a terminal with its control characters shown, not run.
  const shown = forTerminal(io.stdout);
  const states = new Map(rollout.deployments.map((d) => [d.id, d.state]));
  const width = Math.max(...rollout.deployments.map((d) => d.agent.length));
  const lastSeq = new Map<number, number>();
  const timeout = new AbortController();
  const timer =
    options.timeoutMs === undefined ? undefined : setTimeout(() => timeout.abort(), options.timeoutMs);
  // A staged rollout is over when its state is final: agents deferred while offline may stay
  // pending long after. Any other rollout is over when every deployment is final.
  const over = () => (progress ? progress.final : [...states.values()].every((s) => isFinalState(s)));
  try {
    while (!over() && !timeout.signal.aborted) {
      try {
        const res = await fetch(client.url(`rollouts/${rollout.id}/events`), {
          headers: {
            Accept: 'text/event-stream',
            ...(client.authorization ? { Authorization: client.authorization } : {}),
          },
          signal: timeout.signal,
        });
        if (!res.ok || !res.body) throw errorFromResponse(res.status, await res.text(), 'follow the rollout');
        for await (const ev of readSse(res.body)) {
          if (ev.event === 'log') {
            const e = parseOrThrow(rolloutLogEventSchema, JSON.parse(ev.data), EVENT);
            const seen = lastSeq.get(e.deploymentId) ?? 0;
            for (const line of e.lines) {
              if (line.seq <= seen) continue;
              io.stdout.write(`${e.agent.padEnd(width)} | ${shown(line.text)}\n`);
            }
            lastSeq.set(e.deploymentId, Math.max(seen, e.lines.at(-1)?.seq ?? 0));
          } else if (ev.event === 'state') {
            const e = parseOrThrow(rolloutStateEventSchema, JSON.parse(ev.data), EVENT);
            const prev = states.get(e.deploymentId);
            if (prev === undefined) continue;
            if (prev !== e.state && isFinalState(e.state)) {
              io.stdout.write(
                `${e.agent.padEnd(width)} | == ${e.state}${e.reason ? `: ${shown(e.reason)}` : ''}\n`,
              );
            }
            states.set(e.deploymentId, e.state);
            progress?.noteDeployment(e.deploymentId, e.state);
          } else if (ev.event === 'rollout' && progress) {
            print(progress.update(parseOrThrow(stagedRolloutSchema, JSON.parse(ev.data), EVENT)));
          } else if (ev.event === 'end') {
            break;
          }
        }
      } catch (err) {
        if (timeout.signal.aborted) break;
        if (err instanceof CairnError && err.status !== undefined && err.status < 500) throw err;
        // The stream broke (a server restart, a proxy): pick it up again.
        io.stderr.write(`cairn: lost the event stream (${(err as Error).message}); reconnecting\n`);
        await sleep(1000, timeout.signal);
      }
    }
  } finally {
    if (timer) clearTimeout(timer);
  }
  const final = await client.request('GET', `rollouts/${rollout.id}`, rolloutInfoSchema);
  if (progress && final.staged) print(progress.update(final.staged));
  io.stdout.write(`\n${forTerminal(io.stdout, { keepNewlines: true })(deploymentTable(final))}`);
  const follow = `follow it with: cairn deploy follow ${rollout.id}; see it with: cairn deploy status ${rollout.id}`;
  if (final.staged) {
    const s = final.staged;
    if (s.state === 'succeeded') return FOLLOW_EXIT.succeeded;
    if (isFinalRolloutState(s.state)) return FOLLOW_EXIT.failed;
    io.stderr.write(
      `cairn: rollout ${rollout.id} is still ${s.state} at the timeout${s.waiting ? ` (${s.waiting})` : ''}; it goes on without this command: ${follow}\n`,
    );
    return FOLLOW_EXIT.unfinished;
  }
  const pending = final.deployments.filter((d) => !isFinalState(d.state));
  if (pending.length > 0) {
    io.stderr.write(
      `cairn: timed out with ${pending.length} deployment(s) not finished: ${pending.map((d) => `${d.agent} (${d.state})`).join(', ')}; ${follow}\n`,
    );
    return FOLLOW_EXIT.unfinished;
  }
  return final.deployments.every((d) => d.state === 'succeeded') ? FOLLOW_EXIT.succeeded : FOLLOW_EXIT.failed;
}
