import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { otherMachineNixEnv, rawRequest, scratchDir, writeNetrc } from '../helpers/binary-cache.ts';
import { plainPackage } from '../helpers/deploy-fixtures.ts';
import { useDeployTestbed } from '../helpers/deploy-testbed.ts';
import { run } from '../helpers/nix.ts';
import { cli } from '../helpers/server.ts';

/** Two-path closure `<name>-lib` <- `<name>` (an activatable plain profile referencing its lib). */
function closure(name: string) {
  return [
    { name: `${name}-lib` },
    {
      ...plainPackage(name),
      deps: [`${name}-lib`],
      script: `${plainPackage(name).script}; echo $dep_${name.replace(/[^A-Za-z0-9]/g, '_')}_lib > $out/lib`,
    },
  ];
}

describe('cache garbage collection with the real Nix and a real agent', () => {
  const testbed = useDeployTestbed({ env: { CAIRN_GC_INTERVAL: '0' } });

  /** Copies `path`'s closure from the cache into a fresh file:// store with the real Nix: NARs and all. */
  async function substitutable(path: string): Promise<boolean> {
    const { server, world } = testbed;
    const scratch = await scratchDir('cairn-gc-nix-');
    try {
      const netrc = await writeNetrc(scratch.dir, server.adminToken);
      await run(
        'nix',
        [
          'copy',
          '--from',
          `${server.url}/cache/main`,
          '--to',
          `file://${scratch.dir}/copy`,
          path,
          '--option',
          'trusted-public-keys',
          world.publicKey,
          '--option',
          'netrc-file',
          netrc,
          '--option',
          'narinfo-cache-negative-ttl',
          '0',
        ],
        { env: otherMachineNixEnv(`${scratch.dir}/xdg`) },
      );
      return true;
    } catch {
      return false;
    } finally {
      await scratch.cleanup();
    }
  }

  it('removes only the aged closure: the rollback target, the current one, a pinned and a recent one stay', async () => {
    const { world } = testbed;
    const env = world.env;
    // A, B, C and the pinned P are pushed first; E, the recent one, after the others have aged.
    const old = await world.publish([
      ...closure('gca'),
      ...closure('gcb'),
      ...closure('gcc'),
      ...closure('gcp'),
    ]);
    await testbed.agent('web1');
    const deploy = async (name: string) => {
      const r = await testbed.activate({ agents: { web1: old.get(name) } });
      assert.equal(r.code, 0, r.stderr);
    };
    await deploy('gcb');
    await deploy('gcc');
    const pinned = await cli(['cache', 'pin', 'main', old.get('gcp')!], env);
    assert.equal(pinned.code, 0, pinned.stderr);

    const set = await cli(['cache', 'set', 'main', '--retention', '3s'], env);
    assert.equal(set.code, 0, set.stderr);
    await sleep(3500);
    const recent = await world.publish(closure('gce'));

    const dry = await cli(['cache', 'gc', 'main', '--dry-run', '--json'], env);
    assert.equal(dry.code, 0, dry.stderr);
    const planned = JSON.parse(dry.stdout) as {
      dryRun: boolean;
      paths: Array<{ storePath: string }>;
      bytesFreed: number;
    };
    assert.equal(planned.dryRun, true, dry.stdout);
    const expected = [old.get('gca')!, old.get('gca-lib')!].sort();
    assert.deepEqual(planned.paths.map((p) => p.storePath).sort(), expected);
    // A dry run removes nothing: a second one plans the same. (Fetching A to see would keep it:
    // a fetch within the retention is a use.)
    const dry2 = await cli(['cache', 'gc', 'main', '--dry-run', '--json'], env);
    assert.deepEqual((JSON.parse(dry2.stdout) as typeof planned).paths, planned.paths);

    const real = await cli(['cache', 'gc', 'main', '--json'], env);
    assert.equal(real.code, 0, real.stderr);
    const done = JSON.parse(real.stdout) as {
      dryRun: boolean;
      paths: Array<{ storePath: string }>;
      bytesFreed: number;
      narFiles: unknown[];
    };
    assert.equal(done.dryRun, false);
    assert.deepEqual(
      done.paths.map((p) => p.storePath),
      planned.paths.map((p) => p.storePath),
    );
    assert.equal(done.narFiles.length, 2, 'the NAR files of A, which nothing else used');
    assert.ok(done.bytesFreed > 0);
    assert.equal(done.bytesFreed, planned.bytesFreed);

    assert.equal(await substitutable(old.get('gca')!), false, 'A was collected');
    assert.equal(await substitutable(old.get('gcb')!), true, 'B, the rollback target, stays');
    assert.equal(await substitutable(old.get('gcc')!), true, 'C, what the agent runs, stays');
    assert.equal(await substitutable(old.get('gcp')!), true, 'the pinned path stays');
    assert.equal(await substitutable(recent.get('gce')!), true, 'E, pushed within the retention, stays');

    const info = await cli(['cache', 'info', 'main'], env);
    assert.equal(info.code, 0, info.stderr);
    assert.match(info.stdout, /retention: +3s\n/);
    assert.match(info.stdout, /reclaimable: 0 B \(0 paths, 0 NAR files\)/);
    assert.match(info.stdout, /last gc: .*\(manual\): removed 2 paths, freed /);

    // Unpinned and aged (fetching it above was a use), the pinned closure goes at the next collection.
    const unpinned = await cli(['cache', 'unpin', 'main', old.get('gcp')!], env);
    assert.equal(unpinned.code, 0, unpinned.stderr);
    await sleep(3500);
    const again = await cli(['cache', 'gc', 'main', '--json'], env);
    assert.equal(again.code, 0, again.stderr);
    const removed = (JSON.parse(again.stdout) as { paths: Array<{ storePath: string }> }).paths.map(
      (p) => p.storePath,
    );
    assert.ok(removed.includes(old.get('gcp')!), `the unpinned path is collected: ${removed.join(' ')}`);
    assert.ok(!removed.includes(old.get('gcb')!) && !removed.includes(old.get('gcc')!));
    const narinfo = await rawRequest(
      `${testbed.server.url}/cache/main/${old.get('gcp')!.slice(11, 43)}.narinfo`,
      {
        headers: { Authorization: `Bearer ${testbed.server.adminToken}` },
      },
    );
    assert.equal(narinfo.status, 404, 'a removed narinfo is not served from memory either');
  });

  it('refuses bad settings, pins and names with clear errors', async () => {
    const { world } = testbed;
    const env = world.env;
    const cases: Array<[string[], RegExp]> = [
      [['cache', 'set', 'main'], /give --retention, --quota or both/],
      [['cache', 'set', 'main', '--retention', 'soon'], /--retention: expected a duration/],
      [['cache', 'set', 'main', '--quota', 'lots'], /--quota: expected a size/],
      [['cache', 'pin', 'main', '/etc/passwd'], /not a store path/],
      [['cache', 'pin', 'main', '/nix/store/00000000000000000000000000000000-nothing'], /does not hold it/],
      [
        ['cache', 'pin', 'main', '/nix/store/00000000000000000000000000000000-x', '--until', '2001-01-01'],
        /lies in the past/,
      ],
      [['cache', 'gc', 'nosuch'], /no cache named 'nosuch'/],
      [['cache', 'unpin', 'main', '/nix/store/00000000000000000000000000000000-x'], /has no pin/],
    ];
    for (const [args, message] of cases) {
      const r = await cli(args, env);
      assert.notEqual(r.code, 0, args.join(' '));
      assert.match(r.stderr, message, args.join(' '));
    }
  });
});
