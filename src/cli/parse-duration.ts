import { CairnError } from '../lib/cairn-error.ts';

/** Parses a duration such as `90s`, `15m`, `2h` or `1d` into milliseconds. */
export function parseDuration(text: string, flag: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h|d)$/.exec(text.trim());
  if (!m)
    throw new CairnError(
      'INVALID_ARGUMENT',
      `Cannot use ${flag}: expected a duration such as 90s, 15m, 2h or 1d (${text})`,
    );
  const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }[
    m[2] as 'ms' | 's' | 'm' | 'h' | 'd'
  ];
  return Number(m[1]) * unit;
}
