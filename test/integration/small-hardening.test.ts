import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { bootstrap } from '../../src/server/bootstrap.ts';
import { migrate } from '../../src/server/db/migrations.ts';
import { openDatabase } from '../../src/server/db/open-database.ts';
import { cli, startTestServer, type TestServer } from '../helpers/server.ts';

/** Issue #23, finding 10: smaller hardening. */
describe('tokens cannot be created already expired', () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer();
  });
  after(async () => {
    await server.stop();
  });

  it('refuses an expiresAt in the past through the API, with the field named, and creates nothing', async () => {
    const before = await fetch(`${server.url}/api/v1/workspaces/default/tokens`, {
      headers: { Authorization: `Bearer ${server.adminToken}` },
    }).then((r) => r.json() as Promise<{ tokens: unknown[] }>);
    for (const expiresAt of ['2020-01-01T00:00:00Z', new Date(Date.now() - 1000).toISOString()]) {
      const res = await fetch(`${server.url}/api/v1/workspaces/default/tokens`, {
        method: 'POST',
        headers: { Authorization: `Bearer ${server.adminToken}`, 'Content-Type': 'application/json' },
        body: JSON.stringify({ name: 'born-dead', scopes: ['admin'], expiresAt }),
      });
      const error = (await res.json()) as { code: string; validations: Array<{ field: string }> };
      assert.equal(res.status, 400);
      assert.equal(error.code, 'INVALID_ARGUMENT');
      assert.deepEqual(
        error.validations.map((v) => v.field),
        ['expiresAt'],
      );
    }
    const after = await fetch(`${server.url}/api/v1/workspaces/default/tokens`, {
      headers: { Authorization: `Bearer ${server.adminToken}` },
    }).then((r) => r.json() as Promise<{ tokens: unknown[] }>);
    assert.equal(after.tokens.length, before.tokens.length);
  });

  it('refuses a past date in cairn token create --expires with exit 2', async () => {
    const r = await cli(['token', 'create', '--scope', 'admin', '--expires', '2020-01-01'], {
      CAIRN_SERVER: server.url,
      CAIRN_TOKEN: server.adminToken,
    });
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /future date/);
  });
});

/**
 * The SQLite file's mode whatever the backend of this run: the file is created by the same code
 * for every server on SQLite, so this test opens one directly (as `cairn server` does) under the
 * loosest umask.
 */
describe('the SQLite database files', () => {
  let dir: string;
  let umask: number;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'cairn-mode-'));
    umask = process.umask(0o000);
  });
  after(async () => {
    process.umask(umask);
    await rm(dir, { recursive: true, force: true });
  });

  it('are created 0600 under umask 000, in a data dir made world-readable beforehand', async () => {
    const dataDir = join(dir, 'data');
    await mkdir(dataDir, { mode: 0o777 });
    const file = join(dataDir, 'cairn.sqlite');
    const database = openDatabase({ kind: 'sqlite', file });
    try {
      await migrate(database.db as never, database.dialect);
      await bootstrap(database, dataDir, Date.now());
      for (const f of [file, `${file}-wal`, `${file}-shm`, join(dataDir, 'admin-token')]) {
        assert.ok(existsSync(f), `${f} is missing`);
        const mode = (await stat(f)).mode & 0o777;
        assert.equal(mode.toString(8), '600', f);
      }
    } finally {
      await database.db.destroy();
    }
  });
});
