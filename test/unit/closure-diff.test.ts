import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { describe, it } from 'node:test';
import { isCairnError } from '../../src/lib/cairn-error.ts';
import { type ClosurePaths, diffClosures, formatClosureDiff } from '../../src/nix/closure-diff.ts';
import { encodeNix32 } from '../../src/nix/nix32.ts';

/** A valid store path for `name`; `build` tells apart rebuilds of one name. */
function sp(name: string, build = 0): string {
  return `/nix/store/${encodeNix32(createHash('sha1').update(`${name}#${build}`).digest())}-${name}`;
}

const KiB = 1024;
const MiB = 1024 * KiB;

/** A closure from [name, narSize, build?] triples. */
function closure(...entries: Array<[string, number, number?]>): ClosurePaths {
  return new Map(entries.map(([name, narSize, build]) => [sp(name, build), { narSize }]));
}

const before = closure(
  ['etc', 1200],
  ['firefox-120.0', 200 * MiB],
  ['foo-2.0', 3 * KiB],
  ['gcc-12.3.0', 100 * KiB],
  ['gcc-12.3.0-lib', 50 * KiB],
  ['hello-2.12', 10 * KiB],
  ['linux-6.6.1', 12 * MiB],
  ['linux-6.6.1-modules', 40 * MiB],
  ['openssl-3.0.12', 5 * MiB],
  ['perl-5.36.0', 30 * MiB],
  ['perl-5.38.0', 31 * MiB],
  ['zlib-1.3', 120 * KiB],
);

const after = closure(
  ['etc', 1300, 1],
  ['firefox-121.0', 201 * MiB],
  ['foo-1.9', 3 * KiB],
  ['gcc-13.2.0', 110 * KiB],
  ['gcc-13.2.0-lib', 55 * KiB],
  ['hello-2.12', 10 * KiB],
  ['libressl-3.8.2', 4 * MiB],
  ['linux-6.6.2', 12 * MiB],
  ['linux-6.6.2-modules', 41 * MiB],
  ['perl-5.36.1', 30 * MiB],
  ['perl-5.38.0', 31 * MiB],
  ['source', 2 * KiB, 1],
  ['source', 3 * KiB, 2],
  ['zlib-1.2.13', 118 * KiB],
  ['zlib-1.3', 120 * KiB],
);

describe('diffClosures', () => {
  const diff = diffClosures(before, after);
  const byName = new Map(diff.packages.map((p) => [p.pname, p]));

  it('classifies each changed package and leaves unchanged ones out', () => {
    const changes = diff.packages.map((p) => [p.pname, p.change]);
    assert.deepEqual(changes, [
      ['etc', 'rebuilt'],
      ['firefox', 'upgraded'],
      ['foo', 'downgraded'],
      ['gcc', 'upgraded'],
      ['libressl', 'added'],
      ['linux', 'upgraded'],
      ['openssl', 'removed'],
      ['perl', 'upgraded'],
      ['source', 'added'],
      ['zlib', 'changed'],
    ]);
  });

  it('groups outputs as versions of one package, sorted by compareVersions', () => {
    const gcc = byName.get('gcc')!;
    assert.deepEqual(gcc.before.versions, ['12.3.0', '12.3.0-lib']);
    assert.deepEqual(gcc.after.versions, ['13.2.0', '13.2.0-lib']);
    assert.deepEqual(gcc.after.paths, [sp('gcc-13.2.0'), sp('gcc-13.2.0-lib')].sort());
    assert.deepEqual(byName.get('zlib')!.after.versions, ['1.2.13', '1.3']);
  });

  it('judges several versions by those that left and arrived, not by the one kept', () => {
    // perl 5.38.0 stays; 5.36.0 became 5.36.1.
    assert.equal(byName.get('perl')!.change, 'upgraded');
    const swap = (a: ClosurePaths, b: ClosurePaths) => diffClosures(a, b).packages.map((p) => p.change);
    assert.deepEqual(swap(closure(['x-1.0', 1], ['x-3.0', 1]), closure(['x-0.9', 1], ['x-3.0', 1])), [
      'downgraded',
    ]);
    assert.deepEqual(swap(closure(['x-1.0', 1], ['x-3.0', 1]), closure(['x-1.0', 1])), ['changed']);
    assert.deepEqual(swap(closure(['x-1.0', 1]), closure(['x-1-0', 1])), ['changed']);
  });

  it('reports sizes per package and for the whole closure', () => {
    assert.deepEqual(byName.get('firefox')!.narSizeDelta, MiB);
    assert.deepEqual(byName.get('openssl')!.after, { versions: [], paths: [], narSize: 0 });
    assert.equal(byName.get('openssl')!.narSizeDelta, -5 * MiB);
    assert.equal(byName.get('source')!.after.narSize, 5 * KiB);
    assert.equal(diff.before.paths, 12);
    assert.equal(diff.after.paths, 15);
    // hello-2.12, perl-5.38.0 and zlib-1.3 are in both.
    assert.equal(diff.pathsAdded, 12);
    assert.equal(diff.pathsRemoved, 9);
    const sum = (c: ClosurePaths) => [...c.values()].reduce((s, i) => s + i.narSize, 0);
    assert.equal(diff.before.narSize, sum(before));
    assert.equal(diff.after.narSize, sum(after));
    assert.equal(diff.narSizeDelta, sum(after) - sum(before));
  });

  it('is plain data that survives JSON', () => {
    assert.deepEqual(JSON.parse(JSON.stringify(diff)), diff);
  });

  it('finds nothing between a closure and itself', () => {
    const same = diffClosures(before, before);
    assert.deepEqual(same.packages, []);
    assert.equal(same.narSizeDelta, 0);
    assert.equal(same.pathsAdded + same.pathsRemoved, 0);
  });

  it('rejects keys that are not store paths with INVALID_STORE_PATH', () => {
    assert.throws(
      () => diffClosures(new Map([['/tmp/x-1.0', { narSize: 1 }]]), before),
      (err) => isCairnError(err, 'INVALID_STORE_PATH'),
    );
  });
});

describe('formatClosureDiff', () => {
  it('renders the diff as nvd does (golden)', () => {
    const text = formatClosureDiff(diffClosures(before, after), {
      before: '/nix/var/nix/profiles/system-1-link',
      after: '/nix/var/nix/profiles/system-2-link',
    });
    assert.equal(text, GOLDEN);
  });

  it('says so when no package changed', () => {
    assert.equal(
      formatClosureDiff(diffClosures(before, before)),
      'No package changes.\nClosure size: 12 -> 12 (0 paths added, 0 paths removed, delta +0, disk usage +0B).\n',
    );
  });

  it('pads entry numbers to the width of the longest, as nvd does', () => {
    const many = closure(...Array.from({ length: 10 }, (_, i): [string, number] => [`p${i}-1.0`, 1]));
    const lines = formatClosureDiff(diffClosures(new Map(), many)).split('\n');
    assert.equal(lines[1], '[A.]  #01  p0  1.0, +1B');
    assert.equal(lines[10], '[A.]  #10  p9  1.0, +1B');
  });
});

const GOLDEN = `<<< /nix/var/nix/profiles/system-1-link
>>> /nix/var/nix/profiles/system-2-link
Version changes:
[U.]  #1  firefox   120.0 -> 121.0, +1.0MiB
[D.]  #2  foo       2.0 -> 1.9
[U.]  #3  gcc       12.3.0, 12.3.0-lib -> 13.2.0, 13.2.0-lib, +15.0KiB
[U.]  #4  linux     6.6.1, 6.6.1-modules -> 6.6.2, 6.6.2-modules, +1.0MiB
[U.]  #5  perl      5.36.0, 5.38.0 -> 5.36.1, 5.38.0
[C.]  #6  zlib      1.3 -> 1.2.13, 1.3, +118.0KiB
Added packages:
[A.]  #1  libressl  3.8.2, +4.0MiB
[A.]  #2  source    <none> ×2, +5.0KiB
Removed packages:
[R.]  #1  openssl   3.0.12, -5.0MiB
Rebuilt packages:
[B.]  #1  etc       <none>, +100B
Closure size: 12 -> 15 (12 paths added, 9 paths removed, delta +3, disk usage +1.1MiB).
`;
