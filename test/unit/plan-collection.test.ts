import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { type GcPath, planCollection } from '../../src/server/cache/plan-collection.ts';

const DAY = 86_400_000;
const NOW = 100 * DAY;

/** A path `name` (its hash part too), last used `daysAgo`, of `size` bytes, referencing `refs`. */
function path(name: string, daysAgo: number, refs: string[] = [], size = 100): GcPath {
  return {
    hashPart: name,
    storePath: `/nix/store/${name}`,
    refs,
    lastUsed: NOW - daysAgo * DAY,
    fileName: `${name}.nar`,
    fileSize: size,
    narSize: size,
  };
}

function plan(
  paths: GcPath[],
  options: { roots?: string[]; retentionDays?: number; quota?: number | null } = {},
) {
  return planCollection({
    paths: new Map(paths.map((p) => [p.hashPart, p])),
    roots: options.roots ?? [],
    now: NOW,
    retentionMs: (options.retentionDays ?? 28) * DAY,
    quotaBytes: options.quota ?? null,
  });
}

const names = (r: Awaited<ReturnType<typeof plan>>) => r.remove.map((x) => `${x.path.hashPart}:${x.reason}`);

describe('planCollection', async () => {
  it('keeps a root closure and what a recent path needs, however old, and removes the rest', async () => {
    const r = await plan(
      [
        path('root', 90, ['rootlib']),
        path('rootlib', 90),
        path('new', 1, ['oldlib']),
        path('oldlib', 90),
        path('old', 90, ['oldonly']),
        path('oldonly', 90),
      ],
      { roots: ['root'] },
    );
    assert.deepEqual(names(r), ['old:retention', 'oldonly:retention']);
    assert.equal(r.rootPaths, 2);
    assert.equal(r.bytesKept, 400);
  });

  it('ignores roots the cache does not hold', async () => {
    assert.deepEqual(names(await plan([path('a', 90)], { roots: ['elsewhere'] })), ['a:retention']);
  });

  it('keeps whatever sits in a reference cycle, with all it needs (Nix never makes one)', async () => {
    const r = await plan([path('x', 90, ['y']), path('y', 90, ['x', 'z']), path('z', 90), path('w', 90)]);
    assert.deepEqual(names(r), ['w:retention']);
  });

  it('over the quota, removes least recently used first, a referrer no later than what it needs', async () => {
    const r = await plan(
      [
        path('app', 20, ['lib'], 100), // needs lib: lib is as recent as app at least
        path('lib', 25, [], 100),
        path('a', 10, [], 100),
        path('b', 5, [], 100),
        path('pinned', 27, [], 1000),
      ],
      { roots: ['pinned'], quota: 1150 },
    );
    // 1400 stored; app (20 days, and lib with it at 20) go before a; lib after app.
    assert.deepEqual(names(r), ['app:quota', 'lib:quota', 'a:quota']);
    assert.equal(r.bytesKept, 1100);
  });

  it('never removes a root to meet the quota', async () => {
    const r = await plan([path('root', 90, [], 5000), path('x', 1)], { roots: ['root'], quota: 1 });
    assert.deepEqual(names(r), ['x:quota']);
    assert.equal(r.bytesKept, 5000);
  });

  it('counts a NAR file shared by two paths once, freed only with the last of them', async () => {
    const a = { ...path('a', 90), fileName: 'shared.nar' };
    const b = { ...path('b', 1), fileName: 'shared.nar' };
    const r = await plan([a, b]);
    assert.deepEqual(names(r), ['a:retention']);
    assert.equal(r.bytesKept, 100);
  });

  it('gives the same plan for the same input', async () => {
    const paths = Array.from({ length: 50 }, (_, i) => path(`p${i}`, i % 7, i > 0 ? [`p${i - 1}`] : []));
    assert.deepEqual(
      names(await plan(paths, { quota: 1000 })),
      names(await plan([...paths].reverse(), { quota: 1000 })),
    );
  });
});
