import assert from 'node:assert/strict';
import { mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import type { Command } from 'commander';
import { createProgram } from '../../src/cli/program.ts';
import { runCli } from '../../src/cli/run-cli.ts';

/**
 * Golden files of `--help` for every command: a change to a command's flags, arguments or
 * wording shows up as a diff here. `UPDATE_GOLDEN=1` rewrites them (and removes those of
 * commands that are gone); review the diff before committing it.
 */
const GOLDEN_DIR = fileURLToPath(new URL('../golden/help/', import.meta.url));
const update = process.env.UPDATE_GOLDEN === '1';

/** Every command of the tree with its words after `cairn`, root first. */
function commandPaths(cmd: Command, words: string[] = []): string[][] {
  return [words, ...cmd.commands.flatMap((sub) => commandPaths(sub, [...words, sub.name()]))];
}

const silent = { write: () => true };
const paths = commandPaths(createProgram({ stdout: silent, stderr: silent, env: {} }));
const goldenName = (words: readonly string[]) => `${['cairn', ...words].join('-')}.txt`;

describe('cairn --help golden files', () => {
  // Commander wraps help to the terminal's width when stdout is a TTY (process.stdout.columns,
  // not the io it writes to); without a TTY it wraps at 80. Pin that, whatever runs the tests.
  const isTTY = Object.getOwnPropertyDescriptor(process.stdout, 'isTTY');
  const errIsTTY = Object.getOwnPropertyDescriptor(process.stderr, 'isTTY');
  before(() => {
    Object.defineProperty(process.stdout, 'isTTY', { value: false, configurable: true, writable: true });
    Object.defineProperty(process.stderr, 'isTTY', { value: false, configurable: true, writable: true });
  });
  after(() => {
    if (isTTY) Object.defineProperty(process.stdout, 'isTTY', isTTY);
    else delete (process.stdout as { isTTY?: boolean }).isTTY;
    if (errIsTTY) Object.defineProperty(process.stderr, 'isTTY', errIsTTY);
    else delete (process.stderr as { isTTY?: boolean }).isTTY;
  });

  for (const words of paths) {
    const title = ['cairn', ...words, '--help'].join(' ');
    it(`${title} matches ${goldenName(words)}`, async () => {
      let out = '';
      let err = '';
      const code = await runCli([...words, '--help'], {
        stdout: { write: (s: string) => (out += s) },
        stderr: { write: (s: string) => (err += s) },
        env: {},
      });
      assert.equal(code, 0, `${title} exited ${code}: ${err}`);
      assert.equal(err, '', `${title} wrote to stderr`);
      const file = join(GOLDEN_DIR, goldenName(words));
      if (update) {
        await mkdir(GOLDEN_DIR, { recursive: true });
        await writeFile(file, out);
        return;
      }
      const golden = await readFile(file, 'utf8').catch(() => undefined);
      assert.ok(golden !== undefined, `no golden file ${file}; run with UPDATE_GOLDEN=1 to create it`);
      assert.equal(out, golden, `${title} differs from ${file}; if intended, rerun with UPDATE_GOLDEN=1`);
    });
  }

  it('has no golden file for a command that no longer exists', async () => {
    const wanted = new Set(paths.map(goldenName));
    const present = (await readdir(GOLDEN_DIR).catch(() => [] as string[])).filter((f) => f.endsWith('.txt'));
    const stale = present.filter((f) => !wanted.has(f));
    if (update) {
      for (const f of stale) await rm(join(GOLDEN_DIR, f));
      return;
    }
    assert.deepEqual(stale, [], 'stale golden files; run with UPDATE_GOLDEN=1 to remove them');
  });
});
