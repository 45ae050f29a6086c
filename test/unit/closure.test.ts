import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { describe, it } from 'node:test';
import { isCairnError } from '../../src/lib/cairn-error.ts';
import {
  assertCompleteClosure,
  computeClosure,
  computeClosureBatched,
  type PathInfo,
  topologicalOrder,
} from '../../src/nix/closure.ts';
import { encodeNix32 } from '../../src/nix/nix32.ts';

/** A valid store path for `name`, its hash part derived from the name. */
function sp(name: string): string {
  return `/nix/store/${encodeNix32(createHash('sha1').update(name).digest())}-${name}`;
}

/** Builds a path info map from `name: [size, ...referenced names]`. */
function graph(spec: Record<string, [number, ...string[]]>): Map<string, PathInfo> {
  return new Map(
    Object.entries(spec).map(([name, [narSize, ...refs]]) => [
      sp(name),
      { narSize, references: refs.map(sp) },
    ]),
  );
}

const diamond = graph({
  app: [100, 'app', 'libfoo', 'libbar'],
  libfoo: [20, 'libc'],
  libbar: [30, 'libc'],
  libc: [1000],
  unrelated: [5],
});

describe('computeClosure', () => {
  it('collects every path reachable from the roots, each counted once', () => {
    const c = computeClosure([sp('app')], diamond);
    assert.deepEqual([...c.infos.keys()].sort(), [sp('app'), sp('libbar'), sp('libc'), sp('libfoo')].sort());
    assert.equal(c.narSize, 1150);
    assert.deepEqual(c.missing, []);
    assert.deepEqual(c.roots, [sp('app')]);
  });

  it('accepts a lookup function and deduplicates roots', () => {
    const c = computeClosure([sp('libfoo'), sp('libfoo'), sp('unrelated')], (p) => diamond.get(p));
    assert.deepEqual(c.roots, [sp('libfoo'), sp('unrelated')]);
    assert.equal(c.narSize, 1025);
  });

  it('terminates on cycles and self-references', () => {
    const g = graph({ a: [1, 'a', 'b'], b: [2, 'c'], c: [4, 'a', 'c'] });
    const c = computeClosure([sp('b')], g);
    assert.equal(c.infos.size, 3);
    assert.equal(c.narSize, 7);
  });

  it('lists unknown paths, roots included, instead of throwing', () => {
    const g = graph({ a: [1, 'gone', 'b'], b: [2, 'also-gone'] });
    const c = computeClosure([sp('a'), sp('nowhere')], g);
    assert.deepEqual(c.missing, [sp('gone'), sp('also-gone'), sp('nowhere')].sort());
    assert.equal(c.narSize, 3);
    assert.deepEqual([...c.infos.keys()], [sp('a'), sp('b')]);
  });

  it('handles closures far deeper than the call stack', () => {
    const n = 50_000;
    const name = (i: number) => `/nix/store/p${i}`;
    const lookup = (p: string): PathInfo | undefined => {
      const i = Number(p.slice('/nix/store/p'.length));
      return i < n ? { narSize: 1, references: i + 1 < n ? [name(i + 1)] : [] } : undefined;
    };
    const c = computeClosure([name(0)], lookup);
    assert.equal(c.narSize, n);
    const order = topologicalOrder(c);
    assert.equal(order[0], name(n - 1));
    assert.equal(order[n - 1], name(0));
  });
});

describe('computeClosureBatched', () => {
  it('asks once per breadth-first level, each path once', async () => {
    const calls: string[][] = [];
    const c = await computeClosureBatched([sp('app'), sp('libc')], async (paths) => {
      calls.push([...paths]);
      return new Map(paths.flatMap((p) => (diamond.has(p) ? [[p, diamond.get(p)!] as const] : [])));
    });
    assert.deepEqual(calls, [
      [sp('app'), sp('libc')],
      [sp('libfoo'), sp('libbar')],
    ]);
    assert.equal(c.narSize, 1150);
  });

  it('reports paths the lookup did not return and ignores ones it was not asked for', async () => {
    const g = graph({ a: [1, 'b'], b: [2, 'c'] });
    const c = await computeClosureBatched([sp('a')], async () => g);
    assert.deepEqual(c.missing, [sp('c')]);
    assert.equal(c.narSize, 3);
  });
});

describe('assertCompleteClosure', () => {
  it('passes a complete closure and throws INVALID_ARGUMENT naming missing paths', () => {
    assertCompleteClosure(computeClosure([sp('app')], diamond));
    const missing = ['a', 'b', 'c', 'd', 'e'].map(sp).sort();
    const c = computeClosure(missing, diamond);
    assert.throws(
      () => assertCompleteClosure(c),
      (err) =>
        isCairnError(err, 'INVALID_ARGUMENT') &&
        err.message.includes(missing[0]!) &&
        err.message.includes('and 2 more') &&
        err.detail === missing.join('\n'),
    );
  });
});

describe('topologicalOrder', () => {
  /** Asserts that every path comes after the paths it references. */
  function assertDependenciesFirst(order: readonly string[], infos: ReadonlyMap<string, PathInfo>): void {
    const position = new Map(order.map((p, i) => [p, i]));
    for (const [path, info] of infos) {
      for (const ref of info.references) {
        if (ref !== path && infos.has(ref))
          assert.ok(position.get(ref)! < position.get(path)!, `${ref} before ${path}`);
      }
    }
  }

  it('puts dependencies first, deterministically, ignoring self-references', () => {
    const c = computeClosure([sp('app')], diamond);
    const order = topologicalOrder(c);
    assert.equal(order.length, 4);
    assert.equal(order[0], sp('libc'));
    assert.equal(order[3], sp('app'));
    assertDependenciesFirst(order, c.infos);
    const reversed = computeClosure([sp('app')], new Map([...diamond].reverse()));
    assert.deepEqual(topologicalOrder(reversed), order);
  });

  it('skips references to missing paths', () => {
    const c = computeClosure([sp('a')], graph({ a: [1, 'gone', 'b'], b: [1] }));
    assert.deepEqual(topologicalOrder(c), [sp('b'), sp('a')]);
  });

  it('refuses a cycle between paths with INVALID_ARGUMENT', () => {
    const c = computeClosure([sp('a')], graph({ a: [1, 'b'], b: [1, 'c'], c: [1, 'a'] }));
    assert.throws(
      () => topologicalOrder(c),
      (err) => isCairnError(err, 'INVALID_ARGUMENT') && /cycle/.test(err.message),
    );
  });
});
