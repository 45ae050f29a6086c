import type { Context } from 'hono';
import { streamSSE } from 'hono/streaming';
import type { DeploymentRepository } from '../db/deployment-repository.ts';
import type { EventBus } from '../events/event-bus.ts';
import { followDeployments } from '../events/follow-deployments.ts';
import { onRevocation } from '../events/on-revocation.ts';

/**
 * Follows one deployment as Server-Sent Events: `state` ({state, step, reason}) on every change,
 * `log` ({lines}) with the lines after `after` (each event's id is its last line's number, so a
 * reconnecting browser resumes where it was), and `end` once the deployment is final.
 */
export function deploymentEvents(
  c: Context,
  deps: { bus: EventBus; deployments: DeploymentRepository; flushLogs: () => Promise<void> },
  target: { workspaceId: number; id: number; after: number; tokenId: string },
): Response {
  return streamSSE(c, async (stream) => {
    const stop = new AbortController();
    stream.onAbort(() => stop.abort());
    // The session's token revoked: the stream ends (without `end`) and the page's reconnect is refused.
    let revoked = false;
    const unsubscribe = onRevocation(deps.bus, target.tokenId, () => {
      revoked = true;
      stop.abort();
    });
    let state: string | undefined;
    const items = followDeployments(deps, {
      concerns: (e) => e.deploymentId === target.id,
      load: async () => {
        const d = await deps.deployments.byId(target.workspaceId, target.id);
        return d ? [d] : [];
      },
      after: target.after,
      signal: stop.signal,
    });
    try {
      for await (const item of items) {
        if (item.kind === 'idle') {
          await stream.write(': keep-alive\n\n');
        } else if (item.kind === 'state') {
          ({ state } = item.state);
          const { step, reason } = item.state;
          await stream.writeSSE({ event: 'state', data: JSON.stringify({ state, step, reason }) });
        } else if (item.kind === 'log') {
          await stream.writeSSE({
            event: 'log',
            id: String(item.lines.at(-1)!.seq),
            data: JSON.stringify({ lines: item.lines }),
          });
        }
      }
    } finally {
      unsubscribe();
    }
    if (state !== undefined && !stream.aborted && !revoked) {
      await stream.writeSSE({ event: 'end', data: JSON.stringify({ state }) });
    }
  });
}
