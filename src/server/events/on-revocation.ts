import type { EventBus } from './event-bus.ts';

/**
 * Calls `end` once when token `tokenId` is revoked, as agent sockets are closed: an event stream
 * opened with a token must not outlive it. Returns the unsubscribe, to call when the stream ends.
 */
export function onRevocation(bus: EventBus, tokenId: string, end: () => void): () => void {
  let ended = false;
  return bus.subscribe('token-revoked', (e) => {
    if (e.tokenId !== tokenId || ended) return;
    ended = true;
    end();
  });
}
