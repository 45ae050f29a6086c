import { format } from 'node:util';

/** How the server writes its log: JSON lines (for journald, a log shipper) or readable lines. */
export type LogFormat = 'json' | 'pretty';

const LEVELS: Record<number, string> = {
  10: 'TRACE',
  20: 'DEBUG',
  30: 'INFO ',
  40: 'WARN ',
  50: 'ERROR',
  60: 'FATAL',
};

/** Fields every pino line has, shown elsewhere in a readable line or not at all. */
const OMITTED = new Set(['level', 'time', 'pid', 'hostname', 'msg']);

/**
 * One pino JSON line as a readable one: `18:58:09 INFO  cairn server listening url=http://…`,
 * an error's stack on the lines after it. A line that is not JSON is written as it is.
 */
export function prettyLogLine(line: string): string {
  let entry: Record<string, unknown>;
  try {
    entry = JSON.parse(line) as Record<string, unknown>;
  } catch {
    return line.endsWith('\n') ? line : `${line}\n`;
  }
  const time = typeof entry.time === 'number' ? new Date(entry.time).toISOString().slice(11, 19) : '';
  const level = LEVELS[Number(entry.level)] ?? String(entry.level);
  let stack = '';
  const fields: string[] = [];
  for (const [key, value] of Object.entries(entry)) {
    if (OMITTED.has(key)) continue;
    if (key === 'err' && value !== null && typeof value === 'object') {
      const err = value as { message?: unknown; stack?: unknown };
      fields.push(`err=${JSON.stringify(String(err.message ?? ''))}`);
      if (typeof err.stack === 'string') stack = `${err.stack.replace(/^/gm, '    ')}\n`;
      continue;
    }
    const text = typeof value === 'string' ? value : format('%j', value);
    // Quoted only where needed, so that a line stays easy to read and to copy a value from.
    fields.push(`${key}=${/^[^\s"=]+$/.test(text) ? text : JSON.stringify(text)}`);
  }
  const msg = typeof entry.msg === 'string' ? entry.msg : '';
  return `${[time, level, msg, ...fields].filter((s) => s !== '').join(' ')}\n${stack}`;
}

/** A pino destination writing readable lines to `out` (standard output on a terminal). */
export function prettyDestination(out: { write(text: string): unknown }): { write(line: string): void } {
  return { write: (line) => void out.write(prettyLogLine(line)) };
}
