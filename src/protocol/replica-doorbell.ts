import { z } from 'zod';

const id = z.number().int().nonnegative();

/**
 * What one server replica tells the others through PostgreSQL `NOTIFY`: what changed, as ids
 * only (the readers query the database), gathered over one turn of the sender's event loop.
 * Every key but `r` is optional.
 */
export const replicaDoorbellSchema = z.object({
  /** The replica that sent it: a replica ignores its own. */
  r: z.string().min(1).max(64),
  /** Deployments whose state changed. */
  d: z.array(id).optional(),
  /** Deployments with new log lines, as [rolloutId, deploymentId]. */
  l: z.array(z.tuple([id, id])).optional(),
  /** Agents whose desired deployment changed. */
  a: z.array(id).optional(),
  /** Too many agents' desired deployments changed to name them: re-sync every agent. */
  all: z.literal(1).optional(),
  /** Staged rollouts that changed, as [workspaceId, rolloutId]. */
  o: z.array(z.tuple([id, id])).optional(),
  /** Agents' newest connections, as [agentId, connection epoch]: older ones are closed. */
  c: z.array(z.tuple([id, id])).optional(),
  /** Caches whose narinfos the collector removed: forget the cache's narinfos held in memory. */
  g: z.array(id).optional(),
  /** Revoked tokens' ids. */
  t: z.array(z.string().min(1).max(200)).optional(),
  /** Plans asked of machines held elsewhere, as [request id, agentId]: the holder answers. */
  p: z.array(z.tuple([z.string().regex(/^[0-9a-f]{16}$/), id])).optional(),
  /** Plan requests answered (their rows hold the answers). */
  q: z.array(z.string().regex(/^[0-9a-f]{16}$/)).optional(),
  /** Caches whose signing keys changed, as [workspaceId, cache name]. */
  k: z.array(z.tuple([id, z.string().min(1).max(200)])).optional(),
});

/** See {@link replicaDoorbellSchema}. */
export type ReplicaDoorbell = z.infer<typeof replicaDoorbellSchema>;

/** Reads a notification's payload; undefined when it is not a doorbell. */
export function parseReplicaDoorbell(payload: string | undefined): ReplicaDoorbell | undefined {
  if (payload === undefined) return undefined;
  let json: unknown;
  try {
    json = JSON.parse(payload);
  } catch {
    return undefined;
  }
  const parsed = replicaDoorbellSchema.safeParse(json);
  return parsed.success ? parsed.data : undefined;
}
