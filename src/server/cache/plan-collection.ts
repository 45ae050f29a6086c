import type { GcPath } from '../db/cache-gc-repository.ts';

export type { GcPath };

/** Steps of the plan between two turns of the event loop. */
const YIELD_EVERY = 4000;

/** What a collection removes, and why. */
export interface GcPlan {
  /**
   * Paths to remove, in the order they are deleted in: referrers before their references. Those
   * past the retention come first (a path kept by the retention never refers to one of them, as
   * it is at least as recently used as its referrers), then those over the quota, least recently
   * used first.
   */
  readonly remove: ReadonlyArray<{ readonly path: GcPath; readonly reason: 'retention' | 'quota' }>;
  /** Paths kept because they are in the closure of a root (deployments, pins). */
  readonly rootPaths: number;
  /** Stored bytes of the NAR files no kept path uses once the plan is carried out. */
  readonly bytesFreed: number;
  /** Stored bytes of the NAR files the kept paths use. */
  readonly bytesKept: number;
}

/**
 * Decides which paths of a cache to remove, without touching anything; the same input always
 * gives the same plan, so a dry run lists exactly what the real run removes.
 *
 * - The closure of every root is kept.
 * - A path is as recently used as the most recently used path that needs it (itself or any
 *   referrer, transitively), so a path whose referrer stays is never removed: a path is kept
 *   when that time is within `retentionMs` of `now`.
 * - Over `quotaBytes`, the least recently used of the rest go first, referrers before their
 *   references, until the kept NAR files fit.
 * - A path in a reference cycle (which Nix never makes) is kept, with everything it needs.
 */
export async function planCollection(input: {
  readonly paths: ReadonlyMap<string, GcPath>;
  readonly roots: Iterable<string>;
  readonly now: number;
  readonly retentionMs: number;
  readonly quotaBytes: number | null;
}): Promise<GcPlan> {
  const { paths } = input;
  // Half a second of work at 100,000 paths: requests waiting meanwhile go every few thousand.
  let steps = 0;
  const breathe = async () => {
    if (++steps % YIELD_EVERY === 0) await new Promise((resolve) => setImmediate(resolve));
  };
  const live = closureOf(paths, input.roots);
  const rootPaths = live.size;

  // Referrers before references (Kahn's algorithm over the reference graph).
  const referrers = new Map<string, number>();
  for (const p of paths.values()) {
    for (const r of p.refs) if (paths.has(r)) referrers.set(r, (referrers.get(r) ?? 0) + 1);
    await breathe();
  }
  const order: GcPath[] = [];
  const ready: GcPath[] = [];
  for (const p of paths.values()) if (!referrers.has(p.hashPart)) ready.push(p);
  const lastUsed = new Map<string, number>();
  for (const p of paths.values()) lastUsed.set(p.hashPart, p.lastUsed);
  while (ready.length > 0) {
    await breathe();
    const p = ready.pop() as GcPath;
    order.push(p);
    const used = lastUsed.get(p.hashPart) as number;
    for (const r of p.refs) {
      if (!paths.has(r)) continue;
      if ((lastUsed.get(r) as number) < used) lastUsed.set(r, used);
      const left = (referrers.get(r) as number) - 1;
      referrers.set(r, left);
      if (left === 0) ready.push(paths.get(r) as GcPath);
    }
  }
  if (order.length < paths.size) {
    // A cycle: keep whatever it holds, and all it needs.
    const ordered = new Set(order.map((p) => p.hashPart));
    const cyclic = [...paths.keys()].filter((h) => !ordered.has(h));
    for (const h of closureOf(paths, cyclic)) live.add(h);
  }
  // Height: 1 + the tallest reference, so that referrers sort before what they need.
  const height = new Map<string, number>();
  for (let i = order.length - 1; i >= 0; i--) {
    await breathe();
    const p = order[i] as GcPath;
    let h = 0;
    for (const r of p.refs) h = Math.max(h, (height.get(r) ?? -1) + 1);
    height.set(p.hashPart, h);
  }

  const cutoff = input.now - input.retentionMs;
  const remove: Array<{ path: GcPath; reason: 'retention' | 'quota' }> = [];
  const removed = new Set<string>();
  const candidates: GcPath[] = [];
  for (const p of order) {
    await breathe();
    if (live.has(p.hashPart)) continue;
    if ((lastUsed.get(p.hashPart) as number) < cutoff) {
      remove.push({ path: p, reason: 'retention' });
      removed.add(p.hashPart);
    } else candidates.push(p);
  }

  // The NAR files still used, with how many kept paths use each.
  const users = new Map<string, { size: number; count: number }>();
  for (const p of paths.values()) {
    if (removed.has(p.hashPart)) continue;
    const u = users.get(p.fileName);
    if (u) u.count++;
    else users.set(p.fileName, { size: p.fileSize, count: 1 });
  }
  let kept = 0;
  for (const u of users.values()) kept += u.size;

  if (input.quotaBytes !== null && kept > input.quotaBytes) {
    candidates.sort(
      (a, b) =>
        (lastUsed.get(a.hashPart) as number) - (lastUsed.get(b.hashPart) as number) ||
        (height.get(b.hashPart) as number) - (height.get(a.hashPart) as number) ||
        (a.hashPart < b.hashPart ? -1 : 1),
    );
    for (const p of candidates) {
      if (kept <= input.quotaBytes) break;
      remove.push({ path: p, reason: 'quota' });
      removed.add(p.hashPart);
      const u = users.get(p.fileName) as { size: number; count: number };
      if (--u.count === 0) {
        kept -= u.size;
        users.delete(p.fileName);
      }
    }
  }

  // Freed: the files of removed paths that no kept path uses.
  const freedFiles = new Map<string, number>();
  for (const { path } of remove) if (!users.has(path.fileName)) freedFiles.set(path.fileName, path.fileSize);
  let bytesFreed = 0;
  for (const size of freedFiles.values()) bytesFreed += size;
  return { remove, rootPaths, bytesFreed, bytesKept: kept };
}

/** The hash parts of the closure of `from` within `paths` (roots the cache lacks are ignored). */
export function closureOf(paths: ReadonlyMap<string, GcPath>, from: Iterable<string>): Set<string> {
  const seen = new Set<string>();
  const stack: string[] = [];
  for (const h of from) {
    if (paths.has(h) && !seen.has(h)) {
      seen.add(h);
      stack.push(h);
    }
  }
  while (stack.length > 0) {
    const p = paths.get(stack.pop() as string) as GcPath;
    for (const r of p.refs) {
      if (paths.has(r) && !seen.has(r)) {
        seen.add(r);
        stack.push(r);
      }
    }
  }
  return seen;
}
