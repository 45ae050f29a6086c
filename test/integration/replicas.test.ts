import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { startAgent } from '../helpers/agent-process.ts';
import { plainPackage, profileTarget } from '../helpers/deploy-fixtures.ts';
import { buildPackages, deleteFromStore, RUN_TAG } from '../helpers/nix.ts';
import { cli, createTestDatabase, testPostgresUrl } from '../helpers/server.ts';
import { freePort, spawnServer } from '../helpers/server-process.ts';

describe('two server replicas on one PostgreSQL database', {
  skip: !testPostgresUrl() && 'CAIRN_TEST_DATABASE_URL unset',
}, () => {
  const cleanup: Array<() => Promise<unknown>> = [];
  after(async () => {
    for (const c of cleanup.reverse()) await c().catch(() => {});
  });

  it('a rollout posted to A reaches an agent on B, and following through A shows what the agent told B', async () => {
    const tmp = await mkdtemp(join(tmpdir(), 'cairn-replicas-'));
    cleanup.push(() => rm(tmp, { recursive: true, force: true }));
    const db = await createTestDatabase();
    cleanup.push(() => db.drop());
    assert.equal(db.config.kind, 'postgres');
    const database = (db.config as { url: string }).url;
    // One after the other: the first creates the workspace and the admin token.
    const a = await spawnServer({ port: await freePort(), dataDir: join(tmp, 'a'), database });
    cleanup.push(() => a.kill('SIGKILL'));
    const b = await spawnServer({ port: await freePort(), dataDir: join(tmp, 'b'), database });
    cleanup.push(() => b.kill('SIGKILL'));
    const token = (await readFile(join(tmp, 'a', 'admin-token'), 'utf8')).trim();
    const viaA = { CAIRN_SERVER: a.url, CAIRN_TOKEN: token };
    const viaB = { CAIRN_SERVER: b.url, CAIRN_TOKEN: token };
    assert.equal((await cli(['cache', 'create', 'main'], viaA)).code, 0);
    const agentToken = (await cli(['agent', 'create', 'rb'], viaA)).stdout.trim();
    const agent = await startAgent({
      name: 'rb',
      token: agentToken,
      server: b.url,
      profile: join(tmp, 'profile-rb'),
    });
    cleanup.push(() => agent.stop());
    await agent.waitFor(/connected to/);

    const name = `replicas-${RUN_TAG}`;
    const path = (await buildPackages([plainPackage(name)])).get(name)!;
    // Pushed through B: each replica keeps blobs on its own disk (shared storage is S3's part).
    const pushed = await cli(['push', 'main', path], viaB);
    assert.equal(pushed.code, 0, pushed.stderr);
    await deleteFromStore([path]);
    const file = join(tmp, 'deploy.json');
    await writeFile(file, JSON.stringify({ agents: { rb: path } }));

    // Posted to A, which does not hold the agent; followed through A.
    const r = await cli(['deploy', 'activate', file, '--timeout', '60s'], viaA);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.match(r.stdout, new RegExp(`rb \\| activated ${name}`));
    assert.match(r.stdout, /succeeded/);
    assert.equal(await profileTarget(join(tmp, 'profile-rb')), path);
    // And A answers what the agent reported to B.
    const list = await cli(['deploy', 'list'], viaA);
    assert.match(list.stdout, /rb\s.*succeeded/);
  });
});
