import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { compareVersions } from '../../src/nix/compare-versions.ts';

/** [a, b, compareVersions a b], each checked against Nix 2.8's `builtins.compareVersions`. */
const VERSION_TABLE: ReadonlyArray<readonly [string, string, -1 | 0 | 1]> = [
  // The cases of Nix's own test, tests/lang/eval-okay-versions.nix.
  ['1.0', '2.3', -1],
  ['2.1', '2.3', -1],
  ['2.3', '2.3', 0],
  ['2.5', '2.3', 1],
  ['3.1', '2.3', 1],
  ['2.3.1', '2.3', 1],
  ['2.3.1', '2.3a', 1],
  ['2.3pre1', '2.3', -1],
  ['2.3pre3', '2.3pre12', -1],
  ['2.3a', '2.3c', -1],
  ['2.3pre1', '2.3c', -1],
  ['2.3pre1', '2.3q', -1],
  // A missing component is the empty string: below numbers and words, above `pre`.
  ['1.0', '1.0.0', -1],
  ['1.0', '1.0a', -1],
  ['1.0rc1', '1.0', 1],
  ['1.0pre', '1.0', -1],
  ['', '', 0],
  ['', '0', -1],
  ['a', '', 1],
  // Separators only separate; leading zeros do not count.
  ['1..2', '1.2', 0],
  ['1-2', '1.2', 0],
  ['01', '1', 0],
  ['1.0.', '1.0', 0],
  // Output names that splitPackageName leaves in the version.
  ['12.3.0-lib', '12.3.0', 1],
  ['12.3.0-lib', '13.2.0', -1],
  ['6.6.1-modules', '6.6.1', 1],
  // Dates and hashes in versions.
  ['2024-01-05', '2023-12-31', 1],
  ['24.05.20240101.abcdef', '24.05.20240101.0bcdef', -1],
  // Nix reads a component as a C++ int: beyond 2^31 - 1 it is a word, below any number.
  ['1.2147483647', '1.2147483648', 1],
  ['1.2147483648', '1.2', -1],
  ['1.99999999999', '1.99999999998', 1],
  // Words compare by UTF-8 bytes: upper case first, non-ASCII last.
  ['1.Z', '1.a', -1],
  ['1.\u00e9', '1.z', 1],
  ['1.\u{1f600}', '1.\ufffd', 1],
  ['pre', 'pre', 0],
  ['pre', 'alpha', -1],
];

describe('compareVersions', () => {
  it('orders versions as builtins.compareVersions does', () => {
    for (const [a, b, expected] of VERSION_TABLE) {
      assert.equal(
        compareVersions(a, b),
        expected,
        `compareVersions(${JSON.stringify(a)}, ${JSON.stringify(b)})`,
      );
    }
  });

  it('is antisymmetric and reflexive over the table', () => {
    for (const [a, b] of VERSION_TABLE) {
      assert.equal(compareVersions(b, a), -compareVersions(a, b) || 0, `${a} vs ${b}`);
      assert.equal(compareVersions(a, a), 0, a);
    }
  });

  it('sorts a release series in release order', () => {
    const sorted = ['1.0pre1', '1.0pre2', '1.0', '1.0a', '1.0.1', '1.1', '1.10', '2.0'];
    const shuffled = [...sorted].reverse();
    assert.deepEqual(shuffled.sort(compareVersions), sorted);
  });
});
