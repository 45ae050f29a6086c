import type { Context } from 'hono';
import { streamSSE } from 'hono/streaming';
import type { EventBus } from '../events/event-bus.ts';
import { FOLLOW_IDLE_MS } from '../events/follow-deployments.ts';
import { onRevocation } from '../events/on-revocation.ts';

/** How long changes are gathered before the page is told: a batch opening moves many agents at once. */
const GATHER_MS = 250;

/**
 * Tells a rollout page when its rollout changed, as Server-Sent Events: `changed` (the page then
 * fetches itself again: the server renders, and escapes, every value) after any of its
 * deployments or its staged status changed, and `end` once `isOver` says nothing will change
 * again. Only doorbells, no data: unlike `followDeployments`, it never reads the rollout's logs,
 * which the page does not show.
 */
export function rolloutChanges(
  c: Context,
  deps: { bus: EventBus; isOver: () => Promise<boolean> },
  target: { rolloutId: number; tokenId: string },
): Response {
  return streamSSE(c, async (stream) => {
    let rang = false;
    let revoked = false;
    let wake: (() => void) | undefined;
    const ring = () => {
      rang = true;
      wake?.();
    };
    // Subscribe before the first check, so that nothing falls between the two.
    const unsubs = [
      deps.bus.subscribe('deployment', (e) => {
        if (e.rolloutId === target.rolloutId) ring();
      }),
      deps.bus.subscribe('rollout', (e) => {
        if (e.rolloutId === target.rolloutId) ring();
      }),
      // The session's token revoked: the stream ends (without `end`) and the page's reconnect is refused.
      onRevocation(deps.bus, target.tokenId, () => {
        revoked = true;
        wake?.();
      }),
    ];
    stream.onAbort(() => wake?.());
    try {
      let over = await deps.isOver();
      while (!over && !stream.aborted && !revoked) {
        if (!rang) {
          const idle = await new Promise<boolean>((resolve) => {
            wake = () => resolve(false);
            setTimeout(() => resolve(true), FOLLOW_IDLE_MS).unref();
          });
          wake = undefined;
          if (idle && !stream.aborted) await stream.write(': keep-alive\n\n');
          continue;
        }
        await new Promise((resolve) => setTimeout(resolve, GATHER_MS).unref());
        rang = false;
        if (stream.aborted || revoked) break;
        await stream.writeSSE({ event: 'changed', data: '{}' });
        over = await deps.isOver();
      }
      if (over && !stream.aborted && !revoked) await stream.writeSSE({ event: 'end', data: '{}' });
    } finally {
      for (const u of unsubs) u();
    }
  });
}
