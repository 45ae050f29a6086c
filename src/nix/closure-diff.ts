import { compareVersions } from './compare-versions.ts';
import { parseStorePath, splitPackageName } from './store-path.ts';

/**
 * How a package differs between two closures:
 * - `added` / `removed`: the package name is only in the after / before closure;
 * - `upgraded` / `downgraded`: the highest version that left is below / above the highest
 *   version that arrived (see {@link diffClosures} for packages with several versions);
 * - `changed`: the set of versions changed but not clearly up or down, as when a second
 *   version joins the first or one of two leaves;
 * - `rebuilt`: the same versions at different store paths (new inputs, same version).
 */
export type PackageChange = 'added' | 'removed' | 'upgraded' | 'downgraded' | 'changed' | 'rebuilt';

/** One package (all store paths sharing a package name) in one closure. */
export interface PackageSide {
  /** Distinct versions, lowest first by {@link compareVersions}; `''` for a path without one. */
  readonly versions: readonly string[];
  /** The store paths, sorted. */
  readonly paths: readonly string[];
  /** Total NAR size of the paths in bytes. */
  readonly narSize: number;
}

/** One package that differs between two closures. */
export interface PackageDiff {
  readonly pname: string;
  readonly change: PackageChange;
  /** The package in the before closure; no versions nor paths when `added`. */
  readonly before: PackageSide;
  /** The package in the after closure; no versions nor paths when `removed`. */
  readonly after: PackageSide;
  /** `after.narSize - before.narSize`. */
  readonly narSizeDelta: number;
}

/** Path count and total NAR size of one closure. */
export interface ClosureTotals {
  readonly paths: number;
  readonly narSize: number;
}

/** A package-level diff of two closures, as nvd shows; plain data, JSON-serialisable. */
export interface ClosureDiff {
  /** Packages that differ, sorted by package name; unchanged packages are left out. */
  readonly packages: readonly PackageDiff[];
  readonly before: ClosureTotals;
  readonly after: ClosureTotals;
  /** Store paths only in the after closure. */
  readonly pathsAdded: number;
  /** Store paths only in the before closure. */
  readonly pathsRemoved: number;
  /** `after.narSize - before.narSize`. */
  readonly narSizeDelta: number;
}

/** The store paths of a closure with their NAR sizes, such as `Closure.infos` from `closure.ts`. */
export type ClosurePaths = ReadonlyMap<string, { readonly narSize: number }>;

/** Sorts by UTF-16 code units, not locale, so output is the same on every machine. */
const byCodeUnit = (a: string, b: string): number => (a < b ? -1 : a > b ? 1 : 0);
const byVersion = (a: string, b: string): number => compareVersions(a, b) || byCodeUnit(a, b);

/** A store path with the version split from its name. */
interface VersionedPath {
  readonly path: string;
  readonly version: string;
}

/** Groups store paths by package name. */
function groupByPackage(closure: ClosurePaths): Map<string, VersionedPath[]> {
  const groups = new Map<string, VersionedPath[]>();
  for (const path of closure.keys()) {
    const { pname, version } = splitPackageName(parseStorePath(path).name);
    const group = groups.get(pname);
    if (group === undefined) groups.set(pname, [{ path, version }]);
    else group.push({ path, version });
  }
  return groups;
}

function side(closure: ClosurePaths, group: readonly VersionedPath[] = []): PackageSide {
  return {
    versions: [...new Set(group.map((p) => p.version))].sort(byVersion),
    paths: group.map((p) => p.path).sort(byCodeUnit),
    narSize: group.reduce((sum, p) => sum + (closure.get(p.path)?.narSize ?? 0), 0),
  };
}

const highest = (versions: readonly string[]): string | undefined => versions[versions.length - 1];

/** Classifies a package present in both closures; undefined when its paths are the same. */
function classify(before: PackageSide, after: PackageSide): PackageChange | undefined {
  if (before.paths.join('\n') === after.paths.join('\n')) return undefined;
  // Compare only the versions that left with those that arrived, so that a version kept on
  // both sides (say an old library still needed) does not hide the upgrade of another.
  const left = highest(before.versions.filter((v) => !after.versions.includes(v)));
  const arrived = highest(after.versions.filter((v) => !before.versions.includes(v)));
  if (left === undefined && arrived === undefined) return 'rebuilt';
  if (left === undefined || arrived === undefined) return 'changed';
  const order = compareVersions(arrived, left);
  return order > 0 ? 'upgraded' : order < 0 ? 'downgraded' : 'changed';
}

function totals(closure: ClosurePaths): ClosureTotals {
  let narSize = 0;
  for (const info of closure.values()) narSize += info.narSize;
  return { paths: closure.size, narSize };
}

/**
 * Diffs two closures by package, as nvd does: store paths are grouped by package name
 * ({@link splitPackageName}, so `gcc-12.3.0` and `gcc-12.3.0-lib` are versions `12.3.0` and
 * `12.3.0-lib` of `gcc`), and each package present in either closure with different paths
 * is classified ({@link PackageChange}). When a package has several versions, the highest
 * version only before is compared with the highest only after.
 * @throws CairnError INVALID_STORE_PATH when a key is not a store path.
 */
export function diffClosures(before: ClosurePaths, after: ClosurePaths): ClosureDiff {
  const groupsBefore = groupByPackage(before);
  const groupsAfter = groupByPackage(after);
  const pnames = [...new Set([...groupsBefore.keys(), ...groupsAfter.keys()])].sort(byCodeUnit);
  const packages: PackageDiff[] = [];
  for (const pname of pnames) {
    const a = side(before, groupsBefore.get(pname));
    const b = side(after, groupsAfter.get(pname));
    const change = a.paths.length === 0 ? 'added' : b.paths.length === 0 ? 'removed' : classify(a, b);
    if (change !== undefined) {
      packages.push({ pname, change, before: a, after: b, narSizeDelta: b.narSize - a.narSize });
    }
  }
  const t1 = totals(before);
  const t2 = totals(after);
  let pathsAdded = 0;
  for (const path of after.keys()) if (!before.has(path)) pathsAdded++;
  return {
    packages,
    before: t1,
    after: t2,
    pathsAdded,
    pathsRemoved: t1.paths - (t2.paths - pathsAdded),
    narSizeDelta: t2.narSize - t1.narSize,
  };
}

/** Options of {@link formatClosureDiff}. */
export interface FormatClosureDiffOptions {
  /** A label for the before closure, such as its root path, printed as `<<< label`. */
  readonly before?: string;
  /** A label for the after closure, printed as `>>> label`. */
  readonly after?: string;
}

/** nvd's change letters, plus `B` for rebuilt packages, which nvd does not list. */
const LETTERS: Record<PackageChange, string> = {
  upgraded: 'U',
  downgraded: 'D',
  changed: 'C',
  added: 'A',
  removed: 'R',
  rebuilt: 'B',
};

const SECTIONS: ReadonlyArray<readonly [string, readonly PackageChange[]]> = [
  ['Version changes:', ['upgraded', 'downgraded', 'changed']],
  ['Added packages:', ['added']],
  ['Removed packages:', ['removed']],
  ['Rebuilt packages:', ['rebuilt']],
];

const UNITS = ['KiB', 'MiB', 'GiB', 'TiB'];

/** Formats a byte count change as nvd does, such as `+406.6MiB`, `-12B` or `+0B`. */
function formatBytesDelta(delta: number): string {
  const sign = delta < 0 ? '-' : '+';
  let size = Math.abs(delta);
  if (size < 1024) return `${sign}${size}B`;
  let unit = -1;
  while (size >= 1024 && unit < UNITS.length - 1) {
    size /= 1024;
    unit++;
  }
  return `${sign}${size.toFixed(1)}${UNITS[unit]}`;
}

const signed = (n: number): string => (n < 0 ? `${n}` : `+${n}`);

/** Lists a side's versions, `<none>` for an empty one and `×N` for N paths of one version. */
function formatVersions(s: PackageSide): string {
  const counts = new Map<string, number>();
  for (const path of s.paths) {
    const { version } = splitPackageName(parseStorePath(path).name);
    counts.set(version, (counts.get(version) ?? 0) + 1);
  }
  return s.versions
    .map((v) => {
      const count = counts.get(v) ?? 1;
      return `${v === '' ? '<none>' : v}${count > 1 ? ` ×${count}` : ''}`;
    })
    .join(', ');
}

function describeChange(p: PackageDiff): string {
  let text: string;
  if (p.change === 'added' || p.change === 'rebuilt') text = formatVersions(p.after);
  else if (p.change === 'removed') text = formatVersions(p.before);
  else text = `${formatVersions(p.before)} -> ${formatVersions(p.after)}`;
  return p.narSizeDelta === 0 ? text : `${text}, ${formatBytesDelta(p.narSizeDelta)}`;
}

/**
 * Renders a closure diff as nvd's text output: sections of lines such as
 * `[U.]  #1  foo  1.0 -> 1.1, +4.0KiB` (the dot is nvd's selection mark, which Cairn does
 * not track), then `Closure size: 10 -> 12 (5 paths added, 3 paths removed, delta +2,
 * disk usage +1.2MiB).` Numbers are zero-padded per section and names padded to one column,
 * as nvd does; the output ends with a newline and depends on nothing but the diff.
 */
export function formatClosureDiff(diff: ClosureDiff, options: FormatClosureDiffOptions = {}): string {
  const lines: string[] = [];
  if (options.before !== undefined) lines.push(`<<< ${options.before}`);
  if (options.after !== undefined) lines.push(`>>> ${options.after}`);
  const width = Math.max(0, ...diff.packages.map((p) => p.pname.length));
  for (const [title, changes] of SECTIONS) {
    const entries = diff.packages.filter((p) => changes.includes(p.change));
    if (entries.length === 0) continue;
    lines.push(title);
    const digits = String(entries.length).length;
    entries.forEach((p, i) => {
      const n = String(i + 1).padStart(digits, '0');
      lines.push(`[${LETTERS[p.change]}.]  #${n}  ${p.pname.padEnd(width)}  ${describeChange(p)}`);
    });
  }
  if (diff.packages.length === 0) lines.push('No package changes.');
  const { before, after } = diff;
  lines.push(
    `Closure size: ${before.paths} -> ${after.paths} (${diff.pathsAdded} paths added, ` +
      `${diff.pathsRemoved} paths removed, delta ${signed(after.paths - before.paths)}, ` +
      `disk usage ${formatBytesDelta(diff.narSizeDelta)}).`,
  );
  return `${lines.join('\n')}\n`;
}
