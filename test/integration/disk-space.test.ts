import assert from 'node:assert/strict';
import { access, readlink } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { describe, it } from 'node:test';
import { plainPackage, profileTarget, writeDeployJson, writeScript } from '../helpers/deploy-fixtures.ts';
import { useDeployTestbed } from '../helpers/deploy-testbed.ts';
import { buildPackages, RUN_TAG, run } from '../helpers/nix.ts';
import { cli } from '../helpers/server.ts';

describe('disk space', () => {
  const bed = useDeployTestbed();

  it('refuses to download a closure larger than the free space on /nix/store, switching nothing', async () => {
    const record = join(bed.world.profiles, 'big-activated');
    // 3 MB unpacked (zeros: the compressed NAR in the cache stays tiny).
    const bigName = `disk-big-${RUN_TAG}`;
    const big = (
      await bed.world.publish([
        {
          name: bigName,
          script: `mkdir -p $out; head -c 3000000 /dev/zero > $out/blob\n${writeScript('bin/activate', `echo activated >> ${record}`)}`,
        },
      ])
    ).get(bigName)!;
    // What the machine runs now: built here and left in the store.
    const baseName = `disk-base-${RUN_TAG}`;
    const base = (await buildPackages([plainPackage(baseName)])).get(baseName)!;
    const profile = join(bed.world.profiles, 'small1');
    await run('nix-env', ['--profile', profile, '--set', base]);

    // The agent gets its own mount namespace in which /nix/store is a 1 MiB tmpfs holding only a
    // copy of the running generation: a machine whose store disk is nearly full. The Nix
    // database (in /nix/var) is the real one, so Nix still knows what is valid and what a
    // download would bring. `exec` keeps the agent the process that receives signals.
    const copy = join(bed.world.profiles, 'base-copy');
    const setup = [
      `cp -a ${base} ${copy}`,
      'mount -t tmpfs -o size=1m cairn-small-store /nix/store',
      `cp -a ${copy} ${base}`,
      'exec "$@"',
    ].join(' && ');
    await bed.agent('small1', { wrap: ['unshare', '--mount', 'sh', '-c', setup, 'sh'] });

    const narinfo = await fetch(`${bed.server.url}/cache/main/${basename(big).slice(0, 32)}.narinfo`, {
      headers: { Authorization: `Bearer ${bed.server.adminToken}` },
    }).then((r) => r.text());
    const narSize = Number(/^NarSize: (\d+)$/m.exec(narinfo)?.[1]);
    assert.ok(narSize >= 3_000_000, narinfo);
    const needs = (narSize / 1024 / 1024).toFixed(1);

    // The plan says so first: the machine's free space against the download, exit 1.
    const file = await writeDeployJson(bed.world.profiles, { agents: { small1: big } });
    const plan = await cli(['deploy', 'plan', file], bed.world.env);
    assert.equal(plan.code, 1, plan.stdout + plan.stderr);
    assert.match(plan.stdout, /^Download: 1 path\(s\), 2\.\d MiB unpacked, .* \(the machine's own count\)$/m);
    assert.match(
      plan.stdout,
      /^Disk: (\d+\.\d KiB|1\.0 MiB) free on \/nix\/store: NOT ENOUGH for the download \(with a 10% margin\)$/m,
    );

    const r = await bed.activate({ agents: { small1: big } });
    assert.equal(r.code, 1, r.stdout + r.stderr);
    assert.match(
      r.stdout,
      new RegExp(
        `small1 \\| == failed: not enough disk space: the closure needs ${needs.replace('.', '\\.')} MiB, /nix/store has (0\\.\\d|1\\.0) MiB free\\n`,
      ),
    );
    assert.match(r.stdout, /small1\s+failed\s/);
    const list = await cli(['deploy', 'list', '--agent', 'small1', '--json'], bed.world.env);
    assert.deepEqual(
      (JSON.parse(list.stdout) as Array<{ state: string; step: string | null }>).map((d) => [
        d.state,
        d.step,
      ]),
      [['failed', 'realise']],
    );
    // Nothing changed: the same generation of the same path, nothing downloaded, nothing activated.
    assert.equal(await readlink(profile), 'small1-1-link');
    assert.equal(await profileTarget(profile), base);
    await assert.rejects(run('nix-store', ['--check-validity', big]), /is not valid/);
    await assert.rejects(access(record), { code: 'ENOENT' });
  });
});
