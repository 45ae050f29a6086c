/** Code points shown escaped besides C0/C1 controls: bidi overrides and isolates, line separators. */
const INVISIBLE = new Set([
  0x200e, 0x200f, 0x2028, 0x2029, 0x202a, 0x202b, 0x202c, 0x202d, 0x202e, 0x2066, 0x2067, 0x2068, 0x2069,
]);

/**
 * Text from elsewhere (an agent's log line, a failure reason) made safe for a terminal: every
 * control character (C0 but tab, DEL, C1) and every bidi or line-separator code point is shown
 * as an escape (`\x1b`, `\u202e`) instead of acting, so that a line cannot write the clipboard
 * (OSC 52), move the cursor to hide other lines, or reorder what is shown. A newline is shown
 * as `\n` too, unless `keepNewlines` (a whole table of such text).
 */
export function visibleControls(text: string, options: { keepNewlines?: boolean } = {}): string {
  let out = '';
  let start = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    const control = (c < 0x20 && c !== 0x09) || (c >= 0x7f && c <= 0x9f) || INVISIBLE.has(c);
    if (!control || (c === 0x0a && options.keepNewlines)) continue;
    out += text.slice(start, i);
    out +=
      c === 0x0a
        ? '\\n'
        : c === 0x0d
          ? '\\r'
          : c <= 0xff
            ? `\\x${c.toString(16).padStart(2, '0')}`
            : `\\u${c.toString(16)}`;
    start = i + 1;
  }
  return start === 0 ? text : out + text.slice(start);
}

/**
 * How to show outside text on `stream`: with {@link visibleControls} on a terminal, as it is
 * otherwise (a file or a pipe gets the bytes the agent sent).
 */
export function forTerminal(
  stream: { isTTY?: boolean },
  options: { keepNewlines?: boolean } = {},
): (text: string) => string {
  return stream.isTTY ? (text) => visibleControls(text, options) : (text) => text;
}
