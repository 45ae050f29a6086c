/** Milliseconds per unit of a duration string. */
const UNITS = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 } as const;

/**
 * Parses a duration such as `90s`, `15m`, `2h`, `1d` or `0` into milliseconds; undefined when the
 * text is not one (negative durations included: a minus sign is not part of the syntax).
 */
export function durationMs(text: string): number | undefined {
  const t = text.trim();
  if (t === '0') return 0;
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h|d)$/.exec(t);
  if (!m) return undefined;
  return Number(m[1]) * UNITS[m[2] as keyof typeof UNITS];
}

/** Seconds as the largest whole unit: `28d`, `12h`, `15m` or `90s`. */
export function formatSeconds(seconds: number): string {
  for (const [unit, n] of [
    ['d', 86_400],
    ['h', 3_600],
    ['m', 60],
  ] as const) {
    if (seconds % n === 0) return `${seconds / n}${unit}`;
  }
  return `${seconds}s`;
}
