import { createHash } from 'node:crypto';

/**
 * What one store path of a reported closure says about it (path, NAR size, references as
 * space-separated base names), as one digest: two reports that say the same share a row, two
 * that differ (an agent lying about a path's size or references) get a row each.
 */
export function pathDigest(path: string, narSize: number, refs: string): string {
  return createHash('sha256').update(`${path}\0${narSize}\0${refs}`).digest('hex');
}

/**
 * The digest of a whole reported closure, from the digests of its paths (each counted once,
 * in byte order, so that the order an agent sent them in does not matter): reports of the
 * same content, from a fleet of identical machines, are stored once.
 */
export function closureDigest(pathDigests: Iterable<string>): string {
  const sorted = [...new Set(pathDigests)].sort();
  return createHash('sha256').update(sorted.join('\n')).digest('hex');
}
