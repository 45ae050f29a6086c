import { readFile } from 'node:fs/promises';
import { sleep } from '../lib/backoff.ts';
import { CairnError } from '../lib/cairn-error.ts';
import {
  type DeploymentInfo,
  type RolloutInfo,
  rolloutInfoSchema,
  rolloutLogEventSchema,
  rolloutStateEventSchema,
} from '../protocol/api-schemas.ts';
import { type DeployJsonInput, deployJsonSchema } from '../protocol/deploy-json.ts';
import { isFinalState } from '../protocol/deployment-state.ts';
import { parseOrThrow } from '../protocol/parse-or-throw.ts';
import type { ApiClient } from './api-client.ts';
import { errorFromResponse } from './api-client.ts';
import type { CliIo } from './command-context.ts';
import { formatTable } from './format-table.ts';
import { readSse } from './read-sse.ts';

/** An event that does not fit its schema breaks the stream like a lost connection: it is picked up again. */
const EVENT = { action: "read the rollout's events", whole: '(event)', code: 'COMMAND_FAILED' } as const;

/**
 * Reads and validates deploy.json, reporting every problem at once. Returns the file as written
 * (the server validates it again and fills in defaults itself: durations stay `1m`, not 60000).
 */
export async function readDeployJson(file: string): Promise<DeployJsonInput> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    throw new CairnError(
      'INVALID_ARGUMENT',
      `Cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`,
    );
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new CairnError(
      'INVALID_ARGUMENT',
      `Cannot parse ${file}: not valid JSON (${(err as Error).message})`,
    );
  }
  parseOrThrow(deployJsonSchema, json, { action: `use ${file}`, whole: '(file)' });
  return json as DeployJsonInput;
}

/** Options of {@link deployActivate}. */
export interface DeployActivateOptions {
  readonly file: string;
  readonly agents: readonly string[];
  readonly async: boolean;
  readonly timeoutMs: number | undefined;
}

/**
 * `cairn deploy activate`: creates the rollout, then follows every agent's log until each
 * deployment is final (or the timeout), prints a summary and returns the exit code.
 */
export async function deployActivate(
  client: ApiClient,
  io: CliIo,
  options: DeployActivateOptions,
): Promise<number> {
  const deploy = await readDeployJson(options.file);
  const query = options.agents.map((a) => `agent=${encodeURIComponent(a)}`).join('&');
  const rollout = await client.request(
    'POST',
    `rollouts${query ? `?${query}` : ''}`,
    rolloutInfoSchema,
    deploy,
  );
  return await followRollout(client, io, rollout, options);
}

/**
 * Follows a rollout to its end (or prints its id with `async`): every agent's log prefixed with
 * its name, then a summary; resolves to the exit code, 0 only when every deployment succeeded.
 */
export async function followRollout(
  client: ApiClient,
  io: CliIo,
  rollout: RolloutInfo,
  options: { async: boolean; timeoutMs: number | undefined },
): Promise<number> {
  if (options.async) {
    io.stdout.write(`${rollout.id}\n`);
    io.stderr.write(
      `rollout ${rollout.id}: ${rollout.deployments.length} deployment(s); follow it at ${rollout.url}\n`,
    );
    return 0;
  }
  io.stderr.write(
    `rollout ${rollout.id}: deploying to ${rollout.deployments.map((d) => d.agent).join(', ')}\n`,
  );
  const states = new Map(
    rollout.deployments.map((d) => [d.id, { agent: d.agent, state: d.state, reason: d.reason }]),
  );
  const width = Math.max(...rollout.deployments.map((d) => d.agent.length));
  const lastSeq = new Map<number, number>();
  const deadline = options.timeoutMs === undefined ? undefined : Date.now() + options.timeoutMs;
  const timeout = new AbortController();
  const timer = deadline === undefined ? undefined : setTimeout(() => timeout.abort(), deadline - Date.now());
  const allFinal = () => [...states.values()].every((s) => isFinalState(s.state));
  try {
    while (!allFinal() && !timeout.signal.aborted) {
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
              io.stdout.write(`${e.agent.padEnd(width)} | ${line.text}\n`);
            }
            lastSeq.set(e.deploymentId, Math.max(seen, e.lines.at(-1)?.seq ?? 0));
          } else if (ev.event === 'state') {
            const e = parseOrThrow(rolloutStateEventSchema, JSON.parse(ev.data), EVENT);
            const prev = states.get(e.deploymentId);
            if (!prev) continue;
            if (prev.state !== e.state && isFinalState(e.state)) {
              io.stdout.write(`${e.agent.padEnd(width)} | == ${e.state}${e.reason ? `: ${e.reason}` : ''}\n`);
            }
            states.set(e.deploymentId, { agent: e.agent, state: e.state, reason: e.reason });
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
  io.stdout.write(`\n${summary(final.deployments)}`);
  const pending = final.deployments.filter((d) => !isFinalState(d.state));
  if (pending.length > 0) {
    io.stderr.write(
      `cairn: timed out with ${pending.length} deployment(s) not finished: ${pending.map((d) => `${d.agent} (${d.state})`).join(', ')}\n`,
    );
    return 1;
  }
  return final.deployments.every((d) => d.state === 'succeeded') ? 0 : 1;
}

function summary(deployments: readonly DeploymentInfo[]): string {
  const duration = (d: DeploymentInfo) => {
    if (!d.startedAt) return '-';
    const end = d.finishedAt ? Date.parse(d.finishedAt) : Date.now();
    return `${((end - Date.parse(d.startedAt)) / 1000).toFixed(1)}s`;
  };
  return formatTable(
    ['AGENT', 'STATUS', 'DURATION', 'STORE PATH', 'REASON'],
    deployments.map((d) => [
      d.agent,
      d.state,
      duration(d),
      d.storePath,
      [d.reason, d.rebootRequired ? 'reboot required' : null].filter(Boolean).join('; '),
    ]),
  );
}
