/**
 * Fails a test run that skipped a test it should have run. Reads the report of
 * scripts/skip-reporter.mjs and the allow-list test/expected-skips.txt; prints one line per
 * unexpected skip, naming the test and why it skipped, and exits 1 if there is any.
 * Usage: node --import tsx scripts/check-skips.ts REPORT.json sqlite|postgres
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

/** One test that did not run, as scripts/skip-reporter.mjs writes it. */
export interface SkippedTest {
  readonly file: string;
  /** The names of its suites and its own, joined with " > ". */
  readonly name: string;
  readonly reason: string;
}

const ALLOW_LIST = fileURLToPath(new URL('../test/expected-skips.txt', import.meta.url));

/** The allowed skips of `run`, as "file | name" keys. */
export function allowedSkips(text: string, run: string): Set<string> {
  const allowed = new Set<string>();
  for (const [i, raw] of text.split('\n').entries()) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    const parts = line.split(' | ');
    if (parts.length < 3 || !['sqlite', 'postgres'].includes(parts[0]!)) {
      throw new Error(
        `Cannot read test/expected-skips.txt: expected "sqlite|postgres | FILE | NAME" (line ${i + 1}: ${line})`,
      );
    }
    if (parts[0] === run) allowed.add(parts.slice(1).join(' | '));
  }
  return allowed;
}

/** The skipped tests of `report` that `allowed` does not list. */
export function unexpectedSkips(report: readonly SkippedTest[], allowed: ReadonlySet<string>): SkippedTest[] {
  return report.filter((t) => !allowed.has(`${t.file} | ${t.name}`));
}

function main(argv: readonly string[]): number {
  const [reportFile, run] = argv;
  if (reportFile === undefined || (run !== 'sqlite' && run !== 'postgres')) {
    process.stderr.write('usage: check-skips.ts REPORT.json sqlite|postgres\n');
    return 2;
  }
  let report: SkippedTest[];
  try {
    report = JSON.parse(readFileSync(reportFile, 'utf8')) as SkippedTest[];
  } catch (err) {
    process.stderr.write(`test: cannot check skipped tests: no report (${(err as Error).message})\n`);
    return 1;
  }
  const unexpected = unexpectedSkips(report, allowedSkips(readFileSync(ALLOW_LIST, 'utf8'), run));
  for (const t of unexpected) {
    process.stderr.write(`test: unexpected skip on ${run}: ${t.file} | ${t.name} (${t.reason})\n`);
  }
  if (unexpected.length > 0) {
    process.stderr.write(
      `test: ${unexpected.length} test(s) skipped that must run; install what they need, or list an expected skip in test/expected-skips.txt\n`,
    );
    return 1;
  }
  process.stdout.write(
    `test: ${report.length} skipped test(s) on ${run}, all listed in test/expected-skips.txt\n`,
  );
  return 0;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) process.exitCode = main(process.argv.slice(2));
