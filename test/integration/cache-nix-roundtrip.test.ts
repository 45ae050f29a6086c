import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { sql } from 'kysely';
import {
  createTestCache,
  listFiles,
  otherMachineNixEnv,
  rawRequest,
  type Scratch,
  scratchDir,
  substituterArgs,
  type TestCache,
  writeNetrc,
} from '../helpers/binary-cache.ts';
import { buildPackages, RUN_TAG, run, TEST_NIX_CONFIG } from '../helpers/nix.ts';
import { cli, startTestServer, type TestServer } from '../helpers/server.ts';

/** A closure of three paths: app -> lib, app -> base, lib -> base. */
function closure(prefix: string) {
  return [
    { name: `${prefix}-base` },
    { name: `${prefix}-lib`, deps: [`${prefix}-base`] },
    { name: `${prefix}-app`, deps: [`${prefix}-lib`, `${prefix}-base`] },
  ];
}

const VARIANTS = ['copy', 'copyzstd', 'copybzip2', 'zstd', 'xz', 'none'] as const;

describe('binary cache round trip with the real Nix', () => {
  let server: TestServer;
  let cache: TestCache;
  let scratch: Scratch;
  let pushNetrc: string;
  let pullNetrc: string;
  const built = new Map<string, string>();

  before(async () => {
    server = await startTestServer();
    cache = await createTestCache(server, 'main');
    scratch = await scratchDir();
    pushNetrc = await writeNetrc(scratch.dir, cache.pushToken, 'push-netrc');
    pullNetrc = await writeNetrc(scratch.dir, cache.pullToken, 'pull-netrc');
    const packages = await buildPackages(VARIANTS.flatMap((v) => closure(`rt${v}`)));
    for (const [k, v] of packages) built.set(k, v);
  });
  after(async () => {
    await server.stop();
    await scratch.cleanup();
  });

  const paths = (variant: string) => closure(`rt${variant}`).map((p) => built.get(p.name)!);
  const app = (variant: string) => built.get(`rt${variant}-app`)!;

  /** Deletes the closure from the local store; it must be gone afterwards. */
  async function deleteClosure(variant: string): Promise<void> {
    await run('nix-store', ['--delete', ...paths(variant)]);
    for (const p of paths(variant)) {
      await assert.rejects(readFile(join(p, 'tag')), { code: 'ENOENT' }, `${p} should be deleted`);
    }
  }

  /** Checks that the closure is back with the contents it was built with. */
  async function assertClosureRestored(variant: string): Promise<void> {
    const [base, lib, appPath] = paths(variant) as [string, string, string];
    for (const p of [base, lib, appPath])
      assert.equal(await readFile(join(p, 'tag'), 'utf8'), `${RUN_TAG}\n`);
    assert.equal(await readFile(join(lib, 'deps'), 'utf8'), `${base}\n`);
    assert.equal(await readFile(join(appPath, 'deps'), 'utf8'), `${lib}\n${base}\n`);
    const verify = await run('nix-store', ['--verify-path', ...paths(variant)]);
    assert.equal(verify, '');
  }

  /** Substitutes the closure back with `nix-store --realise`, as a machine with an empty narinfo cache. */
  async function realiseFromCache(variant: string): Promise<void> {
    const xdg = await scratchDir('cairn-xdg-');
    try {
      await run('nix-store', ['--realise', app(variant), ...substituterArgs(cache, pullNetrc)], {
        env: otherMachineNixEnv(xdg.dir),
      });
    } finally {
      await xdg.cleanup();
    }
  }

  /** Copies the closure back with `nix copy --from`. */
  async function copyFromCache(variant: string): Promise<void> {
    const xdg = await scratchDir('cairn-xdg-');
    try {
      await run(
        'nix',
        [
          'copy',
          '--from',
          cache.url,
          app(variant),
          '--option',
          'trusted-public-keys',
          cache.publicKey,
          '--option',
          'netrc-file',
          pullNetrc,
          '--option',
          'narinfo-cache-negative-ttl',
          '0',
        ],
        { env: otherMachineNixEnv(xdg.dir) },
      );
    } finally {
      await xdg.cleanup();
    }
  }

  /** Every path of the closure is published, signed by the cache, with its references. */
  async function assertPublished(variant: string, compression: string): Promise<void> {
    const keyName = cache.publicKey.split(':')[0]!;
    for (const p of paths(variant)) {
      const hashPart = p.slice('/nix/store/'.length, '/nix/store/'.length + 32);
      const res = await rawRequest(`${cache.url}/${hashPart}.narinfo`, {
        headers: { Authorization: `Bearer ${cache.pullToken}` },
      });
      assert.equal(res.status, 200, res.body);
      assert.match(res.body, new RegExp(`^StorePath: ${p}$`, 'm'));
      assert.match(res.body, new RegExp(`^Compression: ${compression}$`, 'm'));
      assert.match(res.body, new RegExp(`^Sig: ${keyName}:`, 'm'));
    }
    const rows = await server.query<{ refs: string }>(
      sql`SELECT refs FROM store_paths WHERE store_path = ${app(variant)}`,
    );
    assert.equal(rows.length, 1);
    const [base, lib] = paths(variant) as [string, string];
    assert.deepEqual(rows[0]!.refs.split(' ').sort(), [base, lib].map((p) => p.slice(11)).sort());
  }

  it('nix copy --to with a netrc token uploads a closure that nix-store --realise and nix copy --from bring back', async () => {
    const producer = await scratchDir('cairn-xdg-');
    try {
      await run('nix', ['copy', '--to', cache.url, app('copy'), '--option', 'netrc-file', pushNetrc], {
        env: otherMachineNixEnv(producer.dir),
      });
    } finally {
      await producer.cleanup();
    }
    await assertPublished('copy', 'xz');

    await deleteClosure('copy');
    await realiseFromCache('copy');
    await assertClosureRestored('copy');

    await deleteClosure('copy');
    await copyFromCache('copy');
    await assertClosureRestored('copy');
  });

  it('nix copy --to with compression=zstd and write-nar-listing uploads NARs and listings Nix substitutes back', async () => {
    const producer = await scratchDir('cairn-xdg-');
    try {
      const url = `${cache.url}?compression=zstd&write-nar-listing=true`;
      await run('nix', ['copy', '--to', url, app('copyzstd'), '--option', 'netrc-file', pushNetrc], {
        env: otherMachineNixEnv(producer.dir),
      });
    } finally {
      await producer.cleanup();
    }
    await assertPublished('copyzstd', 'zstd');
    const hashPart = app('copyzstd').slice(11, 43);
    const listing = await rawRequest(`${cache.url}/${hashPart}.ls`, {
      headers: { Authorization: `Bearer ${cache.pullToken}` },
    });
    assert.equal(listing.status, 200, listing.body);
    const root = (JSON.parse(listing.body) as { root: { entries: Record<string, unknown> } }).root;
    assert.deepEqual(Object.keys(root.entries).sort(), ['bin', 'deps', 'tag']);

    await deleteClosure('copyzstd');
    await realiseFromCache('copyzstd');
    await assertClosureRestored('copyzstd');
  });

  it('nix copy --to with compression=bzip2 uploads NARs the cache checks, and Nix substitutes them back', async () => {
    const producer = await scratchDir('cairn-xdg-');
    try {
      await run(
        'nix',
        [
          'copy',
          '--to',
          `${cache.url}?compression=bzip2`,
          app('copybzip2'),
          '--option',
          'netrc-file',
          pushNetrc,
        ],
        { env: otherMachineNixEnv(producer.dir) },
      );
    } finally {
      await producer.cleanup();
    }
    await assertPublished('copybzip2', 'bzip2');
    await deleteClosure('copybzip2');
    await realiseFromCache('copybzip2');
    await assertClosureRestored('copybzip2');
  });

  it('nix store copy-log --to uploads a build log that nix log --store reads back', async () => {
    const line = `build log of ${RUN_TAG} ${Date.now()}`;
    const built = await buildPackages([
      { name: 'rtlog', script: `echo "${line}"; mkdir $out; echo ${RUN_TAG} > $out/tag` },
    ]);
    const out = built.get('rtlog')!;
    const producer = await scratchDir('cairn-xdg-');
    try {
      const env = otherMachineNixEnv(producer.dir);
      // The narinfo names the deriver, by which `nix log` finds the log of an output.
      await run('nix', ['copy', '--to', cache.url, out, '--option', 'netrc-file', pushNetrc], { env });
      await run('nix', ['store', 'copy-log', '--to', cache.url, out, '--option', 'netrc-file', pushNetrc], {
        env,
      });
    } finally {
      await producer.cleanup();
    }
    const drv = (await run('nix-store', ['--query', '--deriver', out])).trim();
    const raw = await rawRequest(`${cache.url}/log/${drv.slice('/nix/store/'.length)}`, {
      headers: { Authorization: `Bearer ${cache.pullToken}` },
    });
    assert.equal(raw.status, 200, raw.body);
    assert.equal(raw.body, `${line}\n`);
    // Read through Nix on a machine that never built it, by the output path (Nix finds the
    // derivation in the output's narinfo; a .drv itself is not in the cache).
    const reader = await scratchDir('cairn-xdg-');
    try {
      const log = await run('nix', ['log', '--store', cache.url, out, '--option', 'netrc-file', pullNetrc], {
        env: otherMachineNixEnv(reader.dir),
      });
      assert.equal(log.trim(), line);
    } finally {
      await reader.cleanup();
    }
  });

  for (const compression of ['zstd', 'xz', 'none'] as const) {
    it(`cairn push --compression ${compression} uploads a closure that Nix substitutes back, and a second push skips it`, async () => {
      const env = {
        CAIRN_SERVER: server.url,
        CAIRN_TOKEN: cache.pushToken,
        NIX_CONFIG: TEST_NIX_CONFIG,
      };
      const flags = compression === 'zstd' ? [] : ['--compression', compression];
      // The base first, alone: the full push must then skip it.
      const first = await cli(['push', 'main', paths(compression)[0]!, ...flags], env);
      assert.equal(first.code, 0, first.stderr);
      assert.match(first.stderr, /pushed 1 path\(s\) .* 0 already there/);

      const full = await cli(['push', 'main', app(compression), ...flags], env);
      assert.equal(full.code, 0, full.stderr);
      assert.match(full.stderr, /pushed 2 path\(s\) .* 1 already there/);
      await assertPublished(compression, compression);

      const again = await cli(['push', 'main', app(compression), ...flags], env);
      assert.equal(again.code, 0, again.stderr);
      assert.match(again.stderr, /pushed 0 path\(s\) .* 3 already there/);

      await deleteClosure(compression);
      await realiseFromCache(compression);
      await assertClosureRestored(compression);
      if (compression === 'zstd') {
        await deleteClosure(compression);
        await copyFromCache(compression);
        await assertClosureRestored(compression);
      }
    });
  }

  it('nix copy --to and cairn push with a pull-only token are refused and publish nothing', async () => {
    // Larger than a pipe's buffer, so that an unread `nix-store --dump` would block.
    const big = { name: 'rtdenied-big', script: 'mkdir $out; head -c 4000000 /dev/zero > $out/big' };
    const [base] = await buildPackages([big]).then((m) => [...m.values()]);
    const narFiles = () => server.query(sql`SELECT file_name FROM nar_files ORDER BY file_name`);
    const narsBefore = await narFiles();
    const blobsBefore = await listFiles(join(server.dataDir, 'blobs'));
    const xdg = await scratchDir('cairn-xdg-');
    try {
      await assert.rejects(
        run('nix', ['copy', '--to', cache.url, base!, '--option', 'netrc-file', pullNetrc], {
          env: otherMachineNixEnv(xdg.dir),
        }),
        /HTTP error 403/,
      );
    } finally {
      await xdg.cleanup();
    }
    for (const compression of ['none', 'zstd']) {
      const env = { CAIRN_SERVER: server.url, CAIRN_TOKEN: cache.pullToken, NIX_CONFIG: TEST_NIX_CONFIG };
      const push = await cli(['push', 'main', base!, '--compression', compression], env);
      assert.equal(push.code, 2, push.stderr);
      assert.match(push.stderr, /lacks the cache:main:push scope/);
    }
    // The refused upload's `nix-store --dump` was not left blocked on a pipe nobody reads.
    const dumps = await run('ps', ['-eo', 'args']).then((out) =>
      out.split('\n').filter((l) => l.includes(`--dump ${base}`)),
    );
    assert.deepEqual(dumps, []);
    assert.deepEqual(await server.query(sql`SELECT 1 FROM store_paths WHERE store_path = ${base!}`), []);
    assert.deepEqual(await narFiles(), narsBefore);
    assert.deepEqual(await listFiles(join(server.dataDir, 'blobs')), blobsBefore);
  });
});
