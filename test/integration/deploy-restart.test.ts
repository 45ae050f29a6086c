import assert from 'node:assert/strict';
import { mkdtemp, readFile, readlink, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { sql } from 'kysely';
import { openDatabase } from '../../src/server/db/open-database.ts';
import { type AgentProcess, startAgent } from '../helpers/agent-process.ts';
import { plainPackage } from '../helpers/deploy-fixtures.ts';
import { buildPackages, deleteFromStore, RUN_TAG } from '../helpers/nix.ts';
import { cli, createTestDatabase } from '../helpers/server.ts';
import { freePort, type ServerProcess, spawnServer } from '../helpers/server-process.ts';

describe('a server restart', () => {
  const cleanup: Array<() => Promise<unknown>> = [];
  after(async () => {
    for (const c of cleanup.reverse()) await c().catch(() => {});
  });

  it('is survived by connected agents: they reconnect on their own and get the next deployment', async () => {
    const dataDir = await mkdtemp(join(tmpdir(), 'cairn-restart-'));
    cleanup.push(() => rm(dataDir, { recursive: true, force: true }));
    const port = await freePort();
    // The database the suite runs on (SQLite in the data dir, or PostgreSQL), kept across the restart.
    const db = await createTestDatabase();
    cleanup.push(() => db.drop());
    const database = db.config.kind === 'sqlite' ? `sqlite:${db.config.file}` : db.config.url;
    let server: ServerProcess = await spawnServer({ port, dataDir, database });
    cleanup.push(() => server.kill('SIGKILL'));
    const env = {
      CAIRN_SERVER: server.url,
      CAIRN_TOKEN: (await readFile(join(dataDir, 'admin-token'), 'utf8')).trim(),
    };
    assert.equal((await cli(['cache', 'create', 'main'], env)).code, 0);
    const tokens = new Map<string, string>();
    for (const name of ['r1', 'r2'])
      tokens.set(name, (await cli(['agent', 'create', name], env)).stdout.trim());
    const agents: AgentProcess[] = [];
    for (const [name, token] of tokens) {
      const a = await startAgent({
        name,
        token,
        server: server.url,
        profile: join(dataDir, `profile-${name}`),
      });
      cleanup.push(() => a.stop());
      await a.waitFor(/connected to/);
      agents.push(a);
    }

    await server.kill('SIGTERM');
    for (const a of agents) await a.waitFor(/reconnecting in/);
    server = await spawnServer({ port, dataDir, database });
    // Both come back by themselves.
    for (const a of agents) {
      const deadline = Date.now() + 30_000;
      while (a.lines.filter((l) => /connected to/.test(l)).length < 2) {
        assert.ok(Date.now() < deadline, `agent did not reconnect:\n${a.lines.join('\n')}`);
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    const paths = await buildPackages([plainPackage(`restart-${RUN_TAG}`)]);
    const path = paths.get(`restart-${RUN_TAG}`)!;
    assert.equal((await cli(['push', 'main', path], env)).code, 0);
    await deleteFromStore([path]);
    const file = join(dataDir, 'deploy.json');
    await writeFile(file, JSON.stringify({ agents: { r1: path, r2: path } }));
    const r = await cli(['deploy', 'activate', file, '--timeout', '60s'], env);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    for (const name of ['r1', 'r2']) {
      const profile = join(dataDir, `profile-${name}`);
      assert.equal(await readlink(join(dataDir, await readlink(profile))), path);
    }
    // Both servers kept their state in the database the suite runs on.
    const { db: conn } = openDatabase(db.config);
    try {
      const { rows } = await sql<{ n: number | string }>`select count(*) as n from deployments`.execute(conn);
      assert.equal(Number(rows[0]!.n), 2);
    } finally {
      await conn.destroy();
    }
  });
});
