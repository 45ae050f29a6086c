import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { sql } from 'kysely';
import { type AgentProcess, startAgent } from '../helpers/agent-process.ts';
import {
  otherMachineNixEnv,
  queryDatabase,
  type Scratch,
  scratchDir,
  writeNetrc,
} from '../helpers/binary-cache.ts';
import {
  type DeployWorld,
  deployWorld,
  plainPackage,
  profileTarget,
  writeDeployJson,
  writeScript,
} from '../helpers/deploy-fixtures.ts';
import { buildPackages, deleteFromStore, RUN_TAG, run } from '../helpers/nix.ts';
import { S3RVER_CREDENTIALS, startS3Server, type TestS3Server } from '../helpers/s3-server.ts';
import { cli, startTestServer, type TestServer, testPostgresUrl } from '../helpers/server.ts';
import { freePort } from '../helpers/server-process.ts';
import { until } from '../helpers/staged-rollout.ts';

const onPostgres = testPostgresUrl() !== undefined;

describe('backup and restore of a running SQLite server', {
  skip: onPostgres && 'the backup of a PostgreSQL server is pg_dump (see the PostgreSQL case)',
}, () => {
  let scratch: Scratch;
  let port: number;
  let original: TestServer;
  let restored: TestServer | undefined;
  let originalStopped = false;
  let world: DeployWorld;
  const agents: AgentProcess[] = [];

  before(async () => {
    scratch = await scratchDir('cairn-backup-');
    port = await freePort();
    original = await startTestServer({ listen: `127.0.0.1:${port}` });
    world = await deployWorld(original);
  });
  after(async () => {
    await Promise.all(agents.map((a) => a.stop()));
    if (!originalStopped) await original.stop();
    await restored?.stop();
    await scratch.cleanup();
  });

  it('restores onto a fresh data dir; agents carry on with their tokens, Nix with the original key', async () => {
    const env = world.env;
    const tokens = new Map<string, string>();
    const stateDirs = new Map<string, string>();
    const start = async (name: string) => {
      const agent = await startAgent({
        name,
        token: tokens.get(name)!,
        profile: join(world.profiles, name),
        server: original.url,
        stateDir: stateDirs.get(name)!,
      });
      agents.push(agent);
      return agent;
    };
    for (const name of ['b1', 'b2']) {
      tokens.set(name, await world.createAgent(name));
      stateDirs.set(name, join(scratch.dir, `agent-${name}`));
      await (await start(name)).waitFor(/connected to/);
    }
    // History: a first deployment, and a path that only the cache will hold.
    const v1 = (await world.publish([plainPackage(`bk-v1-${RUN_TAG}`)])).get(`bk-v1-${RUN_TAG}`)!;
    const first = await cli(
      ['deploy', 'activate', await writeDeployJson(world.profiles, { agents: { b1: v1, b2: v1 } })],
      env,
    );
    assert.equal(first.code, 0, first.stderr);
    const kept = (await world.publish([{ name: `bk-kept-${RUN_TAG}` }])).get(`bk-kept-${RUN_TAG}`)!;

    // Load: a rollout whose activation takes seconds, and a push of several paths, both running
    // while the backup is taken.
    const slowName = `bk-slow-${RUN_TAG}`;
    const slow = (
      await world.publish([
        { name: slowName, script: writeScript('bin/activate', 'sleep 4; echo slow done') },
      ])
    ).get(slowName)!;
    const rollout = cli(
      ['deploy', 'activate', await writeDeployJson(world.profiles, { agents: { b1: slow, b2: slow } })],
      env,
    );
    await until('the slow deployments are running', async () => {
      const rows = await original.query<{ state: string }>(
        sql`select state from deployments where store_path = ${slow}`,
      );
      return rows.length === 2 && rows.every((r) => r.state === 'running') ? true : undefined;
    });
    const pushing = world.publish(
      Array.from({ length: 6 }, (_, i) => ({
        name: `bk-load${i}-${RUN_TAG}`,
        script: `head -c 300000 /dev/urandom > $out`,
      })),
    );
    // Every entry written before the backup starts must be in it.
    const auditBefore = JSON.parse((await cli(['audit', '--json'], env)).stdout) as Array<{
      id: number;
      action: string;
    }>;
    const file = join(scratch.dir, 'cairn.backup');
    const backup = await cli(['server', 'backup', '--to', file, '--include-store'], env);
    assert.equal(backup.code, 0, backup.stderr);
    assert.match(
      backup.stderr,
      /^backup of server [0-9a-f]{32} written to .*cairn\.backup: .* verified; NAR files included$/m,
    );
    assert.equal((await stat(file)).mode & 0o777, 0o600);
    const done = await rollout;
    assert.equal(done.code, 0, done.stderr);
    await pushing;
    // b2 restarts before the restore: it knows its last result from its journal only.
    await agents.find((a) => a.lines.some((l) => l.includes(' as b2')))!.stop();
    await start('b2');
    const [identity] = await original.query<{ server_id: string }>(
      sql`select server_id from server_identity`,
    );
    // The original server and its data dir are gone, as with a lost machine.
    await original.stop();
    originalStopped = true;

    const dataDir = join(scratch.dir, 'restored');
    const restore = await cli(['server', 'restore', file, '--data-dir', dataDir], {});
    assert.equal(restore.code, 0, restore.stderr);
    assert.match(restore.stderr, new RegExp(`restored server ${identity!.server_id}`));
    const database = { kind: 'sqlite' as const, file: join(dataDir, 'cairn.sqlite') };
    // The backup caught the rollout in flight; the agents finished it meanwhile.
    const inBackup = await queryDatabase<{ state: string }>(
      database,
      sql`select state from deployments where store_path = ${slow}`,
    );
    assert.deepEqual(
      inBackup.map((r) => r.state),
      ['running', 'running'],
    );
    // Every path the backup's cache publishes has its NAR file, though a push was running.
    const published = await queryDatabase<{ cache_id: number; file_name: string }>(
      database,
      sql`select cache_id, file_name from store_paths`,
    );
    assert.ok(published.length >= 3);
    for (const p of published) {
      assert.ok(
        existsSync(join(dataDir, 'blobs', 'caches', String(p.cache_id), 'nar', p.file_name)),
        `${p.file_name} is restored`,
      );
    }

    // A snapshot a killed server left behind is removed at start.
    const leftover = join(dataDir, '.backup-0123456789ab.sqlite');
    await writeFile(leftover, 'left by a backup that never finished');
    restored = await startTestServer({ dataDir, listen: `127.0.0.1:${port}` });
    assert.equal(existsSync(leftover), false);
    const [identityAfter] = await restored.query<{ server_id: string }>(
      sql`select server_id from server_identity`,
    );
    assert.equal(identityAfter!.server_id, identity!.server_id);
    // The agents reconnect with their old tokens, and report the deployments they finished
    // while the backup's copy thought them running.
    await until('the in-flight deployments end as they did', async () => {
      const rows = await restored!.query<{ state: string }>(
        sql`select state from deployments where store_path = ${slow}`,
      );
      return rows.every((r) => r.state === 'succeeded') ? true : undefined;
    });
    // The audit log as it was when the backup was taken.
    const auditAfter = JSON.parse((await cli(['audit', '--json'], env)).stdout) as Array<{ id: number }>;
    const restoredIds = new Set(auditAfter.map((e) => e.id));
    const expected = auditBefore;
    assert.ok(expected.some((e) => e.action === 'cache.create'));
    assert.deepEqual(
      expected.filter((e) => !restoredIds.has(e.id)),
      [],
    );

    const v3 = (await world.publish([plainPackage(`bk-v3-${RUN_TAG}`)])).get(`bk-v3-${RUN_TAG}`)!;
    const next = await cli(
      ['deploy', 'activate', await writeDeployJson(world.profiles, { agents: { b1: v3, b2: v3 } })],
      env,
    );
    assert.equal(next.code, 0, next.stderr);
    for (const name of ['b1', 'b2']) assert.equal(await profileTarget(join(world.profiles, name)), v3);

    // The real Nix trusts the restored cache with the key it trusted before.
    const pull = await cli(['token', 'create', '--scope', 'cache:main:pull'], env);
    const netrc = await writeNetrc(scratch.dir, pull.stdout.trim());
    await deleteFromStore([kept]);
    const xdg = await scratchDir('cairn-xdg-');
    try {
      await run(
        'nix-store',
        [
          '--realise',
          kept,
          '--option',
          'substituters',
          `${restored.url}/cache/main`,
          '--option',
          'trusted-public-keys',
          world.publicKey,
          '--option',
          'netrc-file',
          netrc,
        ],
        { env: otherMachineNixEnv(xdg.dir) },
      );
    } finally {
      await xdg.cleanup();
    }
    assert.equal(await run('nix-store', ['--verify-path', kept]), '');
  });

  it('refuses a truncated or altered backup, writing nothing', async () => {
    const file = join(scratch.dir, 'whole.backup');
    const target = restored ?? original;
    const backup = await cli(['server', 'backup', '--to', file], {
      CAIRN_SERVER: target.url,
      CAIRN_TOKEN: (await readFile(join(target.dataDir, 'admin-token'), 'utf8')).trim(),
    });
    assert.equal(backup.code, 0, backup.stderr);
    const bytes = await readFile(file);

    const cases: Array<[string, Buffer, RegExp]> = [
      [
        'truncated',
        bytes.subarray(0, Math.floor(bytes.length / 2)),
        /truncated or damaged: the file ends at byte/,
      ],
      ['without its end', bytes.subarray(0, bytes.length - 1024), /truncated or damaged/],
      ['altered', flipByte(bytes, 4096), /cairn-backup\/database\.sqlite was altered/],
      ['empty', Buffer.alloc(0), /truncated or damaged/],
      ['not a backup', Buffer.from('hello\n'.repeat(200)), /truncated or damaged|damaged header/],
    ];
    for (const [what, content, message] of cases) {
      const bad = join(scratch.dir, `${what.replace(/ /g, '-')}.backup`);
      await writeFile(bad, content);
      const dataDir = join(scratch.dir, `target-${what.replace(/ /g, '-')}`);
      const r = await cli(['server', 'restore', bad, '--data-dir', dataDir], {});
      assert.equal(r.code, 1, `${what}: ${r.stderr}`);
      assert.match(r.stderr, /Cannot use the backup: /, what);
      assert.match(r.stderr, message, what);
      assert.equal(existsSync(dataDir), false, `${what}: nothing written`);
    }
    const whole = await cli(['server', 'restore', file, '--data-dir', join(scratch.dir, 'ok')], {});
    assert.equal(whole.code, 0, whole.stderr);
    const again = await cli(['server', 'restore', file, '--data-dir', join(scratch.dir, 'ok')], {});
    assert.equal(again.code, 2);
    assert.match(again.stderr, /Cannot restore into the data dir: it is not empty/);
    const missing = await cli(
      ['server', 'restore', join(scratch.dir, 'nope'), '--data-dir', join(scratch.dir, 'x')],
      {},
    );
    assert.equal(missing.code, 2);
    assert.match(missing.stderr, /Cannot read the backup: ENOENT/);
  });

  it('refuses a backup to a token that is not the admin, and flags that are wrong', async () => {
    const target = restored ?? original;
    const token = await cli(['token', 'create', '--scope', 'activate'], world.env);
    const r = await cli(['server', 'backup', '--to', join(scratch.dir, 'x.backup')], {
      CAIRN_SERVER: target.url,
      CAIRN_TOKEN: token.stdout.trim(),
    });
    assert.equal(r.code, 2);
    assert.match(
      r.stderr,
      /Cannot back up the server: token .* is not an admin token of the default workspace/,
    );
    assert.equal(existsSync(join(scratch.dir, 'x.backup')), false);

    const adminEnv = {
      CAIRN_SERVER: target.url,
      CAIRN_TOKEN: (await readFile(join(target.dataDir, 'admin-token'), 'utf8')).trim(),
    };
    const noDir = await cli(['server', 'backup', '--to', join(scratch.dir, 'nope', 'x.backup')], adminEnv);
    assert.equal(noDir.code, 2);
    assert.match(noDir.stderr, /Cannot write the backup: no such directory/);
    const noTo = await cli(['server', 'backup'], adminEnv);
    assert.equal(noTo.code, 2);
    assert.match(noTo.stderr, /required option '--to <file>' not specified/);
    const badQuery = await fetch(`${target.url}/api/v1/server/backup?include-store=yes`, {
      headers: { Authorization: `Bearer ${adminEnv.CAIRN_TOKEN}` },
    });
    assert.equal(badQuery.status, 400);
    assert.equal(((await badQuery.json()) as { code: string }).code, 'INVALID_ARGUMENT');
    const noDataDir = await cli(['server', 'restore', join(scratch.dir, 'whole.backup')], {});
    assert.equal(noDataDir.code, 2);
    assert.match(noDataDir.stderr, /--data-dir is required/);
  });
});

describe('backup of a server whose blob store is S3', {
  skip: onPostgres && 'the backup of a PostgreSQL server is pg_dump (see the PostgreSQL case)',
}, () => {
  let s3: TestS3Server;
  let server: TestServer;
  let scratch: Scratch;
  before(async () => {
    s3 = await startS3Server();
    scratch = await scratchDir('cairn-backup-s3-');
    server = await startTestServer({
      blobStore: `s3://${s3.bucket}/bk?endpoint=${encodeURIComponent(s3.endpoint)}&path-style=true`,
      env: { ...S3RVER_CREDENTIALS },
    });
  });
  after(async () => {
    await server.stop();
    await s3.stop();
    await scratch.cleanup();
  });

  it('describes the bucket and lists its NAR files, copying none and naming no credentials', async () => {
    const env = { CAIRN_SERVER: server.url, CAIRN_TOKEN: server.adminToken };
    assert.equal((await cli(['cache', 'create', 'main'], env)).code, 0);
    const name = `bk-s3-${RUN_TAG}`;
    const path = (await buildPackages([{ name }])).get(name)!;
    const push = await cli(['push', 'main', path], env);
    assert.equal(push.code, 0, push.stderr);

    const refused = await cli(
      ['server', 'backup', '--to', join(scratch.dir, 'all.backup'), '--include-store'],
      env,
    );
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /Cannot back up the blob store: it is an S3 bucket; copy the bucket/);
    assert.equal(existsSync(join(scratch.dir, 'all.backup')), false);

    const file = join(scratch.dir, 's3.backup');
    const backup = await cli(['server', 'backup', '--to', file], env);
    assert.equal(backup.code, 0, backup.stderr);
    assert.match(backup.stderr, /NAR files in s3:\/\/cairn-test\/bk\?.* \(not copied: copy the bucket\)/);
    const manifest = JSON.parse(await run('tar', ['-xOf', file, 'cairn-backup/manifest.json'])) as {
      store: { kind: string; included: boolean; location: string };
      storeObjects: { count: number };
    };
    assert.deepEqual(manifest.store, {
      kind: 's3',
      included: false,
      location: `s3://cairn-test/bk?region=us-east-1&endpoint=${encodeURIComponent(s3.endpoint)}&path-style=true`,
    });
    // Each NAR file the database refers to is an object of the bucket, under the prefix.
    const listed = (await run('tar', ['-xOf', file, 'cairn-backup/store-objects.tsv']))
      .split('\n')
      .filter((l) => l !== '' && !l.startsWith('#'))
      .map((l) => l.split('\t')[0]!);
    assert.equal(listed.length, manifest.storeObjects.count);
    assert.ok(listed.length >= 1);
    const objects = new Set(await s3.objectKeys());
    for (const key of listed) assert.ok(objects.has(`bk/${key}`), `${key} is in the bucket`);
    assert.doesNotMatch(await readFile(file, 'latin1'), /S3RVER/);

    const restore = await cli(['server', 'restore', file, '--data-dir', join(scratch.dir, 'restored')], {});
    assert.equal(restore.code, 0, restore.stderr);
    assert.match(
      restore.stderr,
      /stay in the bucket: start the server with --blob-store s3:\/\/cairn-test\/bk\?/,
    );
  });
});

describe('backup of a PostgreSQL server', { skip: !onPostgres && 'CAIRN_TEST_DATABASE_URL unset' }, () => {
  let server: TestServer;
  let scratch: Scratch;
  before(async () => {
    server = await startTestServer();
    scratch = await scratchDir('cairn-backup-pg-');
  });
  after(async () => {
    await server.stop();
    await scratch.cleanup();
  });

  it('is refused with the pg_dump way to do it', async () => {
    const file = join(scratch.dir, 'pg.backup');
    const r = await cli(['server', 'backup', '--to', file], {
      CAIRN_SERVER: server.url,
      CAIRN_TOKEN: server.adminToken,
    });
    assert.equal(r.code, 1);
    assert.match(r.stderr, /Cannot back up the server: its database is PostgreSQL; back it up with pg_dump/);
    assert.equal(existsSync(file), false);
  });
});

function flipByte(bytes: Buffer, at: number): Buffer {
  const copy = Buffer.from(bytes);
  copy[at] = (copy[at] ?? 0) ^ 0xff;
  return copy;
}
