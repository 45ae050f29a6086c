import { CairnError } from '../lib/cairn-error.ts';

/** What a closure walk needs to know of one store path, as `nix path-info --json` and narinfo tell. */
export interface PathInfo {
  /** Full store paths this path references; may include the path itself. */
  readonly references: readonly string[];
  /** Size of the path's NAR serialisation in bytes. */
  readonly narSize: number;
}

/** Looks one path up in memory: a map, or a function returning undefined for unknown paths. */
export type PathInfoLookup = ReadonlyMap<string, PathInfo> | ((path: string) => PathInfo | undefined);

/**
 * Looks many paths up at once, such as one SQL query per call; unknown paths are left out
 * of the answer, and paths that were not asked for are ignored. The walk asks for each path
 * once, one breadth-first level per call, so a call may carry thousands of paths.
 */
export type BatchPathInfoLookup = (paths: string[]) => Promise<ReadonlyMap<string, PathInfo>>;

/** The closure of some store paths: every path they reference, directly or not, and themselves. */
export interface Closure {
  /** The paths the closure was computed from, deduplicated, in the order given. */
  readonly roots: readonly string[];
  /** Every known path of the closure with its info, in discovery (breadth-first) order. */
  readonly infos: ReadonlyMap<string, PathInfo>;
  /** Total NAR size of the known paths in bytes; a lower bound when `missing` is not empty. */
  readonly narSize: number;
  /** Paths the lookup did not know, roots included, sorted. The closure is complete when empty. */
  readonly missing: readonly string[];
}

/**
 * The breadth-first walk shared by the synchronous and asynchronous entry points: it yields
 * each level of paths not yet seen and is resumed with what the lookup found of them.
 * Being a loop over levels, it handles any depth; the `seen` set makes cycles and
 * self-references harmless.
 */
function* walk(roots: Iterable<string>): Generator<string[], Closure, ReadonlyMap<string, PathInfo>> {
  const rootList = [...new Set(roots)];
  const seen = new Set(rootList);
  const infos = new Map<string, PathInfo>();
  const missing: string[] = [];
  let narSize = 0;
  let level = rootList;
  while (level.length > 0) {
    const found = yield level;
    const next: string[] = [];
    for (const path of level) {
      const info = found.get(path);
      if (info === undefined) {
        missing.push(path);
        continue;
      }
      infos.set(path, info);
      narSize += info.narSize;
      for (const ref of info.references) {
        if (!seen.has(ref)) {
          seen.add(ref);
          next.push(ref);
        }
      }
    }
    level = next;
  }
  return { roots: rootList, infos, narSize, missing: missing.sort() };
}

/**
 * Computes the closure of `roots` from path infos held in memory.
 * Unknown paths do not throw: they are listed in `missing` (see {@link assertCompleteClosure}),
 * because callers such as `cairn push` want to know all of them, not the first.
 */
export function computeClosure(roots: Iterable<string>, lookup: PathInfoLookup): Closure {
  const get = typeof lookup === 'function' ? lookup : (path: string) => lookup.get(path);
  const walker = walk(roots);
  let step = walker.next();
  while (!step.done) {
    const found = new Map<string, PathInfo>();
    for (const path of step.value) {
      const info = get(path);
      if (info !== undefined) found.set(path, info);
    }
    step = walker.next(found);
  }
  return step.value;
}

/**
 * Computes the closure of `roots` with a batch lookup, calling it once per breadth-first
 * level (as many calls as the closure is deep), never once per path.
 * Unknown paths are listed in `missing`, as with {@link computeClosure}.
 */
export async function computeClosureBatched(
  roots: Iterable<string>,
  lookup: BatchPathInfoLookup,
): Promise<Closure> {
  const walker = walk(roots);
  let step = walker.next();
  while (!step.done) step = walker.next(await lookup(step.value));
  return step.value;
}

/**
 * Throws unless the closure is complete, for callers that cannot go on without every path.
 * @throws CairnError INVALID_ARGUMENT naming the first missing paths and counting the rest.
 */
export function assertCompleteClosure(closure: Closure): void {
  const { missing } = closure;
  if (missing.length === 0) return;
  const shown = missing.slice(0, 3).join(', ');
  const more = missing.length > 3 ? ` and ${missing.length - 3} more` : '';
  const count = missing.length === 1 ? '1 store path is' : `${missing.length} store paths are`;
  throw new CairnError('INVALID_ARGUMENT', `Cannot compute the closure: ${count} unknown (${shown}${more})`, {
    detail: missing.join('\n'),
  });
}

/**
 * Orders the known paths of a closure dependencies first, the order in which Nix copies and
 * uploads them. Ties are broken by path, so the order is deterministic. Self-references and
 * references to missing paths are skipped.
 * @throws CairnError INVALID_ARGUMENT when paths reference each other in a cycle, which
 * Nix never produces; like Nix's `topoSortPaths` we refuse rather than pick an order.
 */
export function topologicalOrder(closure: Closure): string[] {
  const { infos } = closure;
  const order: string[] = [];
  // Absent: not visited; 'open': on the current depth-first path; 'done': emitted.
  const state = new Map<string, 'open' | 'done'>();
  // An explicit stack of [path, its sorted references, index of the next one] instead of
  // recursion: closures are thousands of paths deep in the worst case.
  const stack: Array<[string, string[], number]> = [];
  const push = (path: string) => {
    state.set(path, 'open');
    const refs = infos.get(path)?.references.filter((r) => r !== path && infos.has(r)) ?? [];
    stack.push([path, [...new Set(refs)].sort(), 0]);
  };
  for (const start of [...infos.keys()].sort()) {
    if (state.has(start)) continue;
    push(start);
    while (stack.length > 0) {
      const frame = stack[stack.length - 1]!;
      const [path, refs, i] = frame;
      const ref = refs[i];
      if (ref === undefined) {
        stack.pop();
        state.set(path, 'done');
        order.push(path);
        continue;
      }
      frame[2] = i + 1;
      const s = state.get(ref);
      if (s === 'open') {
        throw new CairnError(
          'INVALID_ARGUMENT',
          `Cannot order the closure dependencies first: references form a cycle (${path} -> ${ref})`,
        );
      }
      if (s === undefined) push(ref);
    }
  }
  return order;
}
