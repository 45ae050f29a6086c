/**
 * Splits a list for `IN (...)` lists and multi-row inserts: SQLite refuses a statement with more
 * than 32,766 bound values and PostgreSQL more than 65,535, and a fleet of 10,000 agents gets
 * there in one rollout.
 */
export function inChunks<T>(items: readonly T[], size: number): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size));
  return out;
}

/** Values per `IN` list: well under both databases' limits. */
export const IN_LIST_SIZE = 1000;
