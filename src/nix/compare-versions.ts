/**
 * Nix's largest component that still counts as a number. Nix parses digit runs as a C++
 * `int`; a longer run fails to parse and is then compared as a string, so that
 * `1.2147483648` sorts below `1.2`. We copy this so that Cairn and `nix` always agree.
 */
const MAX_NUMERIC_COMPONENT = 2 ** 31 - 1;

const isDigit = (c: string | undefined): boolean => c !== undefined && c >= '0' && c <= '9';
const isSeparator = (c: string | undefined): boolean => c === '.' || c === '-';

/** Reads the component of `v` at `start` after skipping separators; returns it and where it ends. */
function nextComponent(v: string, start: number): [component: string, end: number] {
  let p = start;
  while (p < v.length && isSeparator(v[p])) p++;
  const s = p;
  if (isDigit(v[p])) {
    while (p < v.length && isDigit(v[p])) p++;
  } else {
    while (p < v.length && !isDigit(v[p]) && !isSeparator(v[p])) p++;
  }
  return [v.slice(s, p), p];
}

function asNumber(c: string): number | undefined {
  if (!isDigit(c[0])) return undefined;
  const n = Number(c);
  return n <= MAX_NUMERIC_COMPONENT ? n : undefined;
}

/** Byte order of the UTF-8 encodings, as C++ `std::string` compares; UTF-16 order differs. */
function bytesLT(a: string, b: string): boolean {
  return Buffer.compare(Buffer.from(a), Buffer.from(b)) < 0;
}

/** Nix's `componentsLT`, rule for rule. */
function componentLT(c1: string, c2: string): boolean {
  const n1 = asNumber(c1);
  const n2 = asNumber(c2);
  if (n1 !== undefined && n2 !== undefined) return n1 < n2;
  if (c1 === '' && n2 !== undefined) return true;
  if (c1 === 'pre' && c2 !== 'pre') return true;
  if (c2 === 'pre') return false;
  // Nix assumes `2.3a` < `2.3.1`: a number beats a word.
  if (n2 !== undefined) return true;
  if (n1 !== undefined) return false;
  return bytesLT(c1, c2);
}

/**
 * Compares two versions exactly as Nix's `builtins.compareVersions` does: -1, 0 or 1.
 *
 * Versions split into components at `.` and `-`, and wherever digits meet non-digits
 * (`2.3a` is `2`, `3`, `a`). Components compare pairwise, a missing one counting as the
 * empty string: two numbers numerically; the empty string below a number; `pre` below
 * anything else; a number above a word; two words by bytes. Hence `1.0pre1` < `1.0` <
 * `1.0a` < `1.0.1`, `1.0` < `1.0-lib`, and `01` equals `1`.
 */
export function compareVersions(v1: string, v2: string): -1 | 0 | 1 {
  let p1 = 0;
  let p2 = 0;
  while (p1 < v1.length || p2 < v2.length) {
    const [c1, e1] = nextComponent(v1, p1);
    const [c2, e2] = nextComponent(v2, p2);
    p1 = e1;
    p2 = e2;
    if (componentLT(c1, c2)) return -1;
    if (componentLT(c2, c1)) return 1;
  }
  return 0;
}
