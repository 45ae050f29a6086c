import type { CacheRepository, CacheRow } from '../db/cache-repository.ts';

/** How long the list of caches told to agents is reused (a storm asks for it 10,000 times). */
const CACHES_TTL_MS = 1000;

/** The caches of each workspace as told to agents at welcome, each list reused for a second. */
export class AgentCaches {
  readonly #caches: Pick<CacheRepository, 'list'>;
  readonly #byWorkspace = new Map<number, { at: number; list: Promise<CacheRow[]> }>();

  constructor(caches: Pick<CacheRepository, 'list'>) {
    this.#caches = caches;
  }

  /** Forgets the workspace's list: a cache's key changed, and the next welcome must name the new one. */
  forget(workspaceId: number): void {
    this.#byWorkspace.delete(workspaceId);
  }

  /** The workspace's caches, from a lookup at most a second old. */
  async of(workspaceId: number): Promise<CacheRow[]> {
    const now = Date.now();
    let entry = this.#byWorkspace.get(workspaceId);
    if (!entry || now - entry.at > CACHES_TTL_MS) {
      entry = { at: now, list: this.#caches.list(workspaceId) };
      this.#byWorkspace.set(workspaceId, entry);
      entry.list.catch(() => this.#byWorkspace.delete(workspaceId));
    }
    return await entry.list;
  }
}
