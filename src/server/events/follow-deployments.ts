import { isOpenState } from '../../protocol/deployment-state.ts';
import type { DeploymentRepository, DeploymentRow } from '../db/deployment-repository.ts';
import { IN_LIST_SIZE, inChunks } from '../db/in-chunks.ts';
import type { DeploymentEvent, EventBus, LogEvent } from './event-bus.ts';

/** How long the follower waits for an event before it reports the stream idle. */
export const FOLLOW_IDLE_MS = 15_000;

/** A deployment's state, as the followers send it. */
export interface FollowedState {
  readonly deploymentId: number;
  readonly agent: string;
  readonly state: string;
  readonly step: string | null;
  readonly reason: string | null;
}

/** What {@link followDeployments} yields: a state, new log lines, or a quiet spell (for a keep-alive). */
export type FollowItem =
  | { readonly kind: 'state'; readonly state: FollowedState }
  | {
      readonly kind: 'log';
      readonly deploymentId: number;
      readonly agent: string;
      readonly lines: ReadonlyArray<{ seq: number; t: number; text: string }>;
    }
  | { readonly kind: 'rollout'; readonly status: unknown }
  | { readonly kind: 'idle' };

/** What to follow. */
export interface FollowOptions {
  /** Which bus events concern the followed deployments (cheap: it runs for every event). */
  readonly concerns: (e: { rolloutId: number; deploymentId: number }) => boolean;
  /** Reads the deployments to follow from the database (after subscribing, so nothing is lost). */
  readonly load: () => Promise<readonly DeploymentRow[]>;
  /** Only log lines numbered above this (a reconnecting browser's Last-Event-ID); 0 for all. */
  readonly after?: number;
  /** Stops following (the client went away). */
  readonly signal: AbortSignal;
  /**
   * A staged rollout to follow too: its status is yielded when it changes, and following ends
   * when the rollout is over (deferred agents may stay pending long after), not when every
   * deployment is final.
   */
  readonly staged?: {
    readonly rolloutId: number;
    readonly load: () => Promise<{ readonly final: boolean; readonly status: unknown } | null>;
  };
}

/**
 * The one way to follow deployments live: subscribes to the bus, replays each deployment's state
 * and log lines from the database, then yields what the bus reports (states as they change, log
 * lines not yet sent) until every followed deployment is final or `signal` aborts.
 */
export async function* followDeployments(
  deps: { bus: EventBus; deployments: DeploymentRepository; flushLogs: () => Promise<void> },
  options: FollowOptions,
): AsyncGenerator<FollowItem, void, undefined> {
  const { signal, concerns } = options;
  // Events wait here. Taken from the front by swapping arrays, not shift(): a rollout to
  // 10,000 agents queues tens of thousands, and shift() is linear.
  type Queued =
    | { kind: 'state'; e: DeploymentEvent }
    | { kind: 'log'; e: LogEvent }
    | { kind: 'rollout' }
    | { kind: 'resync' };
  let queue: Queued[] = [];
  let taking: Queued[] = [];
  let head = 0;
  const next = (): Queued | undefined => {
    if (head >= taking.length) {
      taking = queue;
      queue = [];
      head = 0;
    }
    return taking[head++];
  };
  let wake: (() => void) | undefined;
  const push = (item: Queued) => {
    queue.push(item);
    wake?.();
  };
  // Subscribe before reading the database, so that nothing falls between the two.
  const unsubs = [
    deps.bus.subscribe('deployment', (e) => {
      if (concerns(e)) push({ kind: 'state', e });
    }),
    deps.bus.subscribe('log', (e) => {
      if (concerns(e)) push({ kind: 'log', e });
    }),
    deps.bus.subscribe('rollout', (e) => {
      if (e.rolloutId === options.staged?.rolloutId) push({ kind: 'rollout' });
    }),
    // Events from other replicas may have been lost: the states are read again.
    deps.bus.subscribe('resync', () => push({ kind: 'resync' })),
  ];
  const onAbort = () => wake?.();
  signal.addEventListener('abort', onAbort);
  try {
    // Lines still in the log writer's buffer were published before we subscribed.
    await deps.flushLogs();
    const rows = await options.load();
    const states = new Map(rows.map((d) => [d.id, d.state]));
    const agents = new Map(rows.map((d) => [d.id, d.agent_name]));
    // Counted, not recomputed per event: a rollout to 10,000 agents sends tens of thousands.
    let openCount = rows.filter((d) => isOpenState(d.state)).length;
    const after = options.after ?? 0;
    const lastSeq = new Map<number, number>();
    // Lines of a thousand deployments per query, not one query per deployment.
    for (const part of inChunks(rows, IN_LIST_SIZE)) {
      const logs =
        after === 0
          ? await deps.deployments.logsOf(part.map((d) => d.id))
          : new Map(
              await Promise.all(
                part.map(async (d) => [d.id, await deps.deployments.logs(d.id, after)] as const),
              ),
            );
      for (const d of part) {
        if (signal.aborted) return;
        const { id: deploymentId, agent_name: agent, state, step, reason } = d;
        yield { kind: 'state', state: { deploymentId, agent, state, step, reason } };
        const lines = logs.get(d.id) ?? [];
        lastSeq.set(d.id, lines.at(-1)?.seq ?? after);
        if (lines.length > 0) {
          yield {
            kind: 'log',
            deploymentId,
            agent,
            lines: lines.map(({ seq, t, text }) => ({ seq, t, text })),
          };
        }
      }
    }
    let stagedOver = false;
    const first = await options.staged?.load();
    if (first) {
      yield { kind: 'rollout', status: first.status };
      stagedOver = first.final;
    }
    const more = () => (first ? !stagedOver : openCount > 0);
    let taken = 0;
    while (more() && !signal.aborted) {
      // Items the consumer writes without waiting would otherwise run as one long chain of
      // microtasks, holding up every other request: let the event loop turn now and then.
      if (++taken % 256 === 0) await new Promise((resolve) => setImmediate(resolve));
      const item = next();
      if (!item) {
        const idle = await new Promise<boolean>((resolve) => {
          wake = () => resolve(false);
          setTimeout(() => resolve(true), FOLLOW_IDLE_MS).unref();
        });
        wake = undefined;
        if (idle && queue.length === 0 && !signal.aborted) yield { kind: 'idle' };
        continue;
      }
      if (item.kind === 'resync') {
        if (queue.some((q) => q.kind === 'resync') || taking.slice(head).some((q) => q.kind === 'resync'))
          continue;
        for (const d of await options.load()) {
          const was = states.get(d.id);
          if (was === undefined || was === d.state) continue;
          push({ kind: 'log', e: { rolloutId: d.rollout_id, deploymentId: d.id, agent: '', lines: [] } });
          const { id: deploymentId, agent_name: agent, state, step, reason } = d;
          push({
            kind: 'state',
            e: {
              workspaceId: d.workspace_id,
              rolloutId: d.rollout_id,
              deploymentId,
              agent,
              state: state as DeploymentEvent['state'],
              step,
              reason,
            },
          });
        }
        // And the staged rollout's status, whose doorbell may have been lost too.
        if (options.staged) push({ kind: 'rollout' });
        continue;
      }
      if (item.kind === 'rollout') {
        // Doorbells: the status is read once for however many rang.
        if (queue.some((q) => q.kind === 'rollout') || taking.slice(head).some((q) => q.kind === 'rollout'))
          continue;
        const s = await options.staged?.load();
        if (s) {
          yield { kind: 'rollout', status: s.status };
          stagedOver = s.final;
        }
        continue;
      }
      const was = states.get(item.e.deploymentId);
      if (was === undefined) continue;
      if (item.kind === 'state') {
        if (isOpenState(was) && !isOpenState(item.e.state)) openCount--;
        else if (!isOpenState(was) && isOpenState(item.e.state)) openCount++;
        states.set(item.e.deploymentId, item.e.state);
        const { deploymentId, agent, state, step, reason } = item.e;
        yield { kind: 'state', state: { deploymentId, agent, state, step, reason } };
      } else {
        const { deploymentId } = item.e;
        const seen = lastSeq.get(deploymentId) ?? 0;
        // No lines: another replica wrote them; they are read from the database.
        const given =
          item.e.lines.length > 0
            ? item.e.lines
            : (await deps.deployments.logs(deploymentId, seen)).map(({ seq, t, text }) => ({ seq, t, text }));
        const lines = given.filter((l) => l.seq > seen);
        if (lines.length === 0) continue;
        lastSeq.set(deploymentId, lines.at(-1)!.seq);
        yield { kind: 'log', deploymentId, agent: agents.get(deploymentId) ?? item.e.agent, lines };
      }
    }
  } finally {
    signal.removeEventListener('abort', onAbort);
    for (const u of unsubs) u();
  }
}
