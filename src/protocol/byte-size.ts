/** Parses a size such as `500MiB`, `50GiB`, `2TB` or `1048576` into bytes. */
export function parseBytes(text: string): number | undefined {
  const m = /^(\d+(?:\.\d+)?)\s*(B|KiB|MiB|GiB|TiB|KB|MB|GB|TB|K|M|G|T)?$/.exec(text.trim());
  if (!m) return undefined;
  const units: Record<string, number> = {
    B: 1,
    KiB: 2 ** 10,
    MiB: 2 ** 20,
    GiB: 2 ** 30,
    TiB: 2 ** 40,
    K: 2 ** 10,
    M: 2 ** 20,
    G: 2 ** 30,
    T: 2 ** 40,
    KB: 1e3,
    MB: 1e6,
    GB: 1e9,
    TB: 1e12,
  };
  const n = Math.round(Number(m[1]) * (units[m[2] ?? 'B'] as number));
  return Number.isSafeInteger(n) ? n : undefined;
}
