/**
 * A `node --test` reporter that writes the tests that did not run (skipped or todo) as JSON, for
 * scripts/check-skips.ts: `[{ "file": "test/...", "name": "suite > test", "reason": "..." }]`.
 * scripts/test.sh passes it as a second reporter next to `spec`. Plain JavaScript: Node loads
 * reporters before `--import tsx` takes effect.
 *
 * Node reports a test after its subtests (depth first, post-order), each with its nesting level,
 * so the suite a test belongs to is the next test reported one level up in the same file.
 */
import { relative } from 'node:path';

/**
 * A reported test and the ones reported under it.
 * @typedef {{ name: string, file: string, reason: string | undefined, children: Reported[] }} Reported
 */

/**
 * Why Node skips a test the person running the suite left out (`--test-name-pattern`,
 * `--test-only`): a selection, not missing coverage.
 */
const SELECTED_OUT = new Set(['test name does not match pattern', "'only' option not set"]);

/** Why a test did not run, or undefined when it ran (or was left out on purpose). */
const why = (skip, todo) => {
  if (typeof skip === 'string' && SELECTED_OUT.has(skip)) return undefined;
  if (skip !== undefined && skip !== false) return typeof skip === 'string' ? skip : 'skipped';
  if (todo !== undefined && todo !== false) return typeof todo === 'string' ? `todo: ${todo}` : 'todo';
  return undefined;
};

/** Appends the tests under `node` that did not run to `out`, with their full names. */
function collect(node, prefix, out) {
  const name = prefix === '' ? node.name : `${prefix} > ${node.name}`;
  if (node.reason !== undefined) out.push({ file: node.file, name, reason: node.reason });
  for (const child of node.children) collect(child, name, out);
}

/** The reporter: consumes the run's events, yields the JSON once the run is over. */
export default async function* skipReporter(source) {
  // Per file, the tests reported at each nesting level that still wait for their parent.
  /** @type {Map<string, Reported[][]>} */
  const waiting = new Map();
  /** @type {Reported[]} */
  const roots = [];
  for await (const event of source) {
    if (event.type !== 'test:pass' && event.type !== 'test:fail') continue;
    const { name, nesting, skip, todo } = event.data;
    const file = event.data.file === undefined ? '(unknown file)' : relative(process.cwd(), event.data.file);
    const levels = waiting.get(file) ?? [];
    waiting.set(file, levels);
    /** @type {Reported} */
    const node = { name, file, reason: why(skip, todo), children: levels[nesting + 1] ?? [] };
    levels[nesting + 1] = [];
    if (nesting === 0) roots.push(node);
    else levels[nesting] = [...(levels[nesting] ?? []), node];
  }
  const skipped = [];
  for (const root of roots) collect(root, '', skipped);
  // A test whose parent was never reported (the run was cut short) still counts.
  for (const levels of waiting.values())
    for (const level of levels) for (const orphan of level ?? []) collect(orphan, '(unfinished)', skipped);
  yield `${JSON.stringify(skipped, null, 2)}\n`;
}
