import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { compareVersions } from '../../src/nix/compare-versions.ts';
import { nixEnv, run } from '../helpers/nix.ts';

/** Versions seen in nixpkgs and the corner cases of Nix's comparison. */
const VERSIONS = [
  '',
  '0',
  '00',
  '1',
  '1.0',
  '1.0.0',
  '1.0.1',
  '1.0a',
  '1.0rc1',
  '1.0pre',
  '1.0pre1',
  '1.0pre12',
  '1.0-lib',
  '1..0',
  '1.0.',
  '-1',
  '12.3.0',
  '12.3.0-lib',
  '6.6.1-modules',
  '2.38-44-bin',
  '24.05.20240101.abcdef',
  'unstable-2024-01-05',
  '2024-01-05',
  '0-unstable-2023-12-31',
  '2147483647',
  '2147483648',
  '99999999999999999999',
  'pre',
  'alpha',
  'Beta',
  'z',
  '\u00e9',
  'r\u00e9sum\u00e9-2',
  // UTF-16 and UTF-8 order these two differently; Nix compares bytes.
  '1.\u{1f600}',
  '1.\ufffd',
];

/** A small deterministic generator (mulberry32), so a failure can be replayed. */
function random(seed: number): () => number {
  let a = seed;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const PARTS = [
  '0',
  '1',
  '2',
  '9',
  '10',
  '007',
  '2147483647',
  '2147483648',
  'pre',
  'rc',
  'a',
  'b',
  'lib',
  'B',
  '\u00e9',
];
const SEPARATORS = ['.', '-', '', '..'];

function randomVersion(next: () => number): string {
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(next() * xs.length)]!;
  let v = pick(PARTS);
  for (let n = Math.floor(next() * 4); n > 0; n--) v += pick(SEPARATORS) + pick(PARTS);
  return v;
}

describe('compareVersions against nix', () => {
  it('agrees with builtins.compareVersions on thousands of pairs in one evaluation', async () => {
    const pairs: Array<[string, string]> = VERSIONS.flatMap((a) =>
      VERSIONS.map((b): [string, string] => [a, b]),
    );
    const next = random(20240101);
    for (let i = 0; i < 2000; i++) pairs.push([randomVersion(next), randomVersion(next)]);

    // The pairs travel as JSON in a file, so no string needs Nix escaping.
    const dir = await mkdtemp(join(tmpdir(), 'cairn-versions-'));
    try {
      const file = join(dir, 'pairs.json');
      await writeFile(file, JSON.stringify(pairs));
      const expr = `map (p: builtins.compareVersions (builtins.elemAt p 0) (builtins.elemAt p 1)) (builtins.fromJSON (builtins.readFile ${JSON.stringify(file)}))`;
      const out = await run('nix-instantiate', ['--eval', '--strict', '--json', '-E', expr], {
        env: nixEnv(),
      });
      const expected = JSON.parse(out) as number[];
      assert.equal(expected.length, pairs.length);
      const wrong = pairs
        .map(([a, b], i) => ({ a, b, nix: expected[i], ours: compareVersions(a, b) }))
        .filter((r) => r.nix !== r.ours);
      assert.deepEqual(wrong, []);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
