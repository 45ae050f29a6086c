import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';
import {
  computeClosure,
  computeClosureBatched,
  type PathInfo,
  topologicalOrder,
} from '../../src/nix/closure.ts';
import { diffClosures, formatClosureDiff } from '../../src/nix/closure-diff.ts';
import { buildPackages, run, type TestPackage } from '../helpers/nix.ts';

interface NixPathInfo extends PathInfo {
  readonly path: string;
  readonly closureSize?: number;
}

/** Runs `nix path-info --json ARGS`: an array in Nix 2.8, an object keyed by path in Nix >= 2.19. */
async function pathInfo(args: readonly string[]): Promise<Map<string, NixPathInfo>> {
  const json = JSON.parse(await run('nix', ['path-info', '--json', ...args])) as
    | NixPathInfo[]
    | Record<string, Omit<NixPathInfo, 'path'>>;
  const list = Array.isArray(json) ? json : Object.entries(json).map(([path, info]) => ({ ...info, path }));
  return new Map(list.map((info) => [info.path, info]));
}

/**
 * A package writing its deps' paths into `$out`, and with `self`, its own path as many real
 * packages do. The builder environment has no PATH, so it is set here.
 */
function pkg(name: string, deps: string[] = [], self = false): TestPackage {
  const refs = [...(self ? ['$out'] : []), ...deps.map((d) => `$dep_${d.replace(/[^A-Za-z0-9]/g, '_')}`)];
  return { name, deps, script: `PATH=/usr/bin:/bin; mkdir -p $out; echo ${refs.join(' ')} > $out/refs` };
}

describe('closures of real store paths', () => {
  let v1: Map<string, string>;
  let v2: Map<string, string>;

  before(async () => {
    v1 = await buildPackages([
      pkg('libc-2.38', [], true),
      pkg('libfoo-1.2', ['libc-2.38']),
      pkg('libbar-0.3', ['libc-2.38']),
      pkg('app-1.0', ['libfoo-1.2', 'libbar-0.3'], true),
    ]);
    // The same expressions build the same paths again: libc and libbar are unchanged.
    v2 = await buildPackages([
      pkg('libc-2.38', [], true),
      pkg('libfoo-1.3', ['libc-2.38']),
      pkg('libbar-0.3', ['libc-2.38']),
      pkg('tool-0.1', ['libc-2.38']),
      pkg('app-1.1', ['libfoo-1.3', 'libbar-0.3', 'tool-0.1'], true),
    ]);
  });

  it('equals nix path-info -r, with the closure size nix path-info -S reports for every path', async () => {
    const app = v1.get('app-1.0')!;
    const infos = await pathInfo(['-r', '-S', app]);
    assert.equal(infos.size, 4);
    for (const [path, info] of infos) {
      const closure = computeClosure([path], infos);
      assert.deepEqual(closure.missing, []);
      assert.equal(closure.narSize, info.closureSize, path);
    }
    const closure = computeClosure([app], infos);
    assert.deepEqual([...closure.infos.keys()].sort(), [...infos.keys()].sort());
    assert.ok(infos.get(app)!.references.includes(app), 'app references itself');
  });

  it('walks level by level with one nix path-info call per level', async () => {
    const calls: number[] = [];
    const closure = await computeClosureBatched([v1.get('app-1.0')!], async (paths) => {
      calls.push(paths.length);
      return await pathInfo(paths);
    });
    // app; libfoo and libbar; libc.
    assert.deepEqual(calls, [1, 2, 1]);
    const app = (await pathInfo(['-S', v1.get('app-1.0')!])).get(v1.get('app-1.0')!);
    assert.equal(closure.narSize, app?.closureSize);
  });

  it('orders dependencies first, as nix-store --query --requisites does', async () => {
    const app = v1.get('app-1.0')!;
    const order = topologicalOrder(computeClosure([app], await pathInfo(['-r', app])));
    const requisites = (await run('nix-store', ['--query', '--requisites', app])).trim().split('\n');
    assert.deepEqual([...order].sort(), [...requisites].sort());
    assert.equal(order[0], v1.get('libc-2.38'));
    assert.equal(order[3], app);
  });

  it('diffs two real closures by package', async () => {
    const a = computeClosure([v1.get('app-1.0')!], await pathInfo(['-r', v1.get('app-1.0')!]));
    const b = computeClosure([v2.get('app-1.1')!], await pathInfo(['-r', v2.get('app-1.1')!]));
    const diff = diffClosures(a.infos, b.infos);
    assert.deepEqual(
      diff.packages.map((p) => [p.pname, p.change]),
      [
        ['app', 'upgraded'],
        ['libfoo', 'upgraded'],
        ['tool', 'added'],
      ],
    );
    assert.equal(diff.pathsAdded, 3);
    assert.equal(diff.pathsRemoved, 2);
    assert.equal(diff.narSizeDelta, b.narSize - a.narSize);
    // Store path names have a fixed length, so even the sizes are the same on every run.
    assert.equal(
      formatClosureDiff(diff),
      [
        'Version changes:',
        '[U.]  #1  app     1.0 -> 1.1, +48B',
        '[U.]  #2  libfoo  1.2 -> 1.3',
        'Added packages:',
        '[A.]  #1  tool    0.1, +336B',
        'Closure size: 4 -> 5 (3 paths added, 2 paths removed, delta +1, disk usage +384B).',
        '',
      ].join('\n'),
    );
  });
});
