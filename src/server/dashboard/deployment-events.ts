import type { Context } from 'hono';
import { streamSSE } from 'hono/streaming';
import { type DeploymentRepository, OPEN_STATES } from '../db/deployment-repository.ts';
import type { DeploymentEvent, EventBus, LogEvent } from '../events/event-bus.ts';

/** How often an idle stream gets a comment, so that proxies keep it open. */
const KEEPALIVE_MS = 15_000;

/**
 * Follows one deployment as Server-Sent Events: `state` ({state, step, reason}) on every change,
 * `log` ({lines}) with the lines after `after` (each event's id is its last line's number, so a
 * reconnecting browser resumes where it was), and `end` once the deployment is final.
 */
export function deploymentEvents(
  c: Context,
  deps: { bus: EventBus; deployments: DeploymentRepository },
  target: { workspaceId: number; id: number; after: number },
): Response {
  return streamSSE(c, async (stream) => {
    const queue: Array<{ kind: 'state'; e: DeploymentEvent } | { kind: 'log'; e: LogEvent }> = [];
    let wake: (() => void) | undefined;
    const push = (item: (typeof queue)[number]) => {
      queue.push(item);
      wake?.();
    };
    // Subscribe before reading the database, so that nothing falls between the two.
    const unsubs = [
      deps.bus.subscribe('deployment', (e) => {
        if (e.deploymentId === target.id) push({ kind: 'state', e });
      }),
      deps.bus.subscribe('log', (e) => {
        if (e.deploymentId === target.id) push({ kind: 'log', e });
      }),
    ];
    stream.onAbort(() => {
      for (const u of unsubs) u();
      wake?.();
    });
    try {
      const d = await deps.deployments.byId(target.workspaceId, target.id);
      if (!d) return;
      let state = d.state;
      await stream.writeSSE({
        event: 'state',
        data: JSON.stringify({ state: d.state, step: d.step, reason: d.reason }),
      });
      let seen = target.after;
      const lines = await deps.deployments.logs(d.id, seen);
      if (lines.length > 0) {
        seen = lines.at(-1)!.seq;
        await stream.writeSSE({
          event: 'log',
          id: String(seen),
          data: JSON.stringify({ lines: lines.map(({ seq, t, text }) => ({ seq, t, text })) }),
        });
      }
      const open = () => (OPEN_STATES as readonly string[]).includes(state);
      while (open() && !stream.aborted) {
        const item = queue.shift();
        if (!item) {
          const idle = await new Promise<boolean>((resolve) => {
            wake = () => resolve(false);
            setTimeout(() => resolve(true), KEEPALIVE_MS).unref();
          });
          wake = undefined;
          if (idle && queue.length === 0 && !stream.aborted) await stream.write(': keep-alive\n\n');
          continue;
        }
        if (item.kind === 'state') {
          state = item.e.state;
          const { step, reason } = item.e;
          await stream.writeSSE({ event: 'state', data: JSON.stringify({ state, step, reason }) });
        } else {
          const fresh = item.e.lines.filter((l) => l.seq > seen);
          if (fresh.length === 0) continue;
          seen = fresh.at(-1)!.seq;
          await stream.writeSSE({ event: 'log', id: String(seen), data: JSON.stringify({ lines: fresh }) });
        }
      }
      if (!stream.aborted) await stream.writeSSE({ event: 'end', data: JSON.stringify({ state }) });
    } finally {
      for (const u of unsubs) u();
    }
  });
}
