import type { ReplicaDoorbell } from '../../protocol/replica-doorbell.ts';

/** The PostgreSQL channel the replicas ring each other's doorbells on. */
export const EVENT_CHANNEL = 'cairn_events';

/** The largest notification sent: PostgreSQL refuses payloads of 8,000 bytes and more. */
export const MAX_NOTIFY_BYTES = 7000;

/**
 * Agents named one by one in a notification; a fan-out to more (a rollout to the fleet) is sent
 * as one "every agent" doorbell instead, and each replica re-syncs the agents it holds.
 */
export const DESIRED_LIST_MAX = 200;

/** The doorbells gathered since the last send. */
export class OutgoingDoorbells {
  readonly deployments = new Set<number>();
  readonly logs = new Map<number, number>();
  readonly desired = new Set<number>();
  readonly rollouts = new Map<number, number>();
  readonly tokens = new Set<string>();
  /** Caches whose signing keys changed: name to workspace id. */
  readonly cacheKeys = new Map<string, number>();
  /** Caches whose narinfos the collector removed. */
  readonly caches = new Set<number>();
  /** Agent id to the epoch of its newest connection. */
  readonly connected = new Map<number, number>();
  /** Plan requests asked: request id to agent id. */
  readonly plansAsked = new Map<string, number>();
  /** Plan requests answered. */
  readonly plansAnswered = new Set<string>();

  get empty(): boolean {
    return (
      this.deployments.size +
        this.logs.size +
        this.desired.size +
        this.rollouts.size +
        this.tokens.size +
        this.cacheKeys.size +
        this.caches.size +
        this.connected.size +
        this.plansAsked.size +
        this.plansAnswered.size ===
      0
    );
  }

  /**
   * Packs the doorbells into as few notifications as fit under {@link MAX_NOTIFY_BYTES}: usually
   * one; a few when thousands of deployments changed in the same moment.
   */
  pack(replica: string): string[] {
    const out: string[] = [];
    let msg: ReplicaDoorbell = { r: replica };
    let size = JSON.stringify(msg).length;
    const add = <K extends 'd' | 'l' | 'a' | 'o' | 't' | 'c' | 'k' | 'g' | 'p' | 'q'>(
      key: K,
      item: NonNullable<ReplicaDoorbell[K]>[number],
    ) => {
      // The item, its comma, and the key's `"k":[]` the first time.
      const cost = JSON.stringify(item).length + 1 + (msg[key] ? 0 : key.length + 6);
      if (size + cost > MAX_NOTIFY_BYTES) {
        out.push(JSON.stringify(msg));
        msg = { r: replica };
        size = JSON.stringify(msg).length;
        return add(key, item);
      }
      const list = (msg[key] ?? []) as unknown[];
      list.push(item);
      (msg as unknown as Record<string, unknown>)[key] = list;
      size += cost;
    };
    if (this.desired.size > DESIRED_LIST_MAX) {
      msg.all = 1;
      size += 8;
    } else for (const a of this.desired) add('a', a);
    for (const d of this.deployments) add('d', d);
    for (const [deploymentId, rolloutId] of this.logs) add('l', [rolloutId, deploymentId]);
    for (const [rolloutId, workspaceId] of this.rollouts) add('o', [workspaceId, rolloutId]);
    for (const t of this.tokens) add('t', t);
    for (const [cache, workspaceId] of this.cacheKeys) add('k', [workspaceId, cache]);
    for (const k of this.caches) add('g', k);
    for (const [agentId, epoch] of this.connected) add('c', [agentId, epoch]);
    for (const [requestId, agentId] of this.plansAsked) add('p', [requestId, agentId]);
    for (const requestId of this.plansAnswered) add('q', requestId);
    out.push(JSON.stringify(msg));
    return out;
  }
}
