import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { createTestDatabase, testPostgresUrl } from '../helpers/server.ts';
import { freePort, spawnServer } from '../helpers/server-process.ts';
import { startWebhookReceiver } from '../helpers/webhook-receiver.ts';

describe('webhooks sent by two replicas on one PostgreSQL database', {
  skip: !testPostgresUrl() && 'CAIRN_TEST_DATABASE_URL unset',
}, () => {
  const cleanup: Array<() => Promise<unknown>> = [];
  after(async () => {
    for (const c of cleanup.reverse()) await c().catch(() => {});
  });

  it('sends each delivery once, though both replicas look for due deliveries all the time', async () => {
    const tmp = await mkdtemp(join(tmpdir(), 'cairn-replicas-wh-'));
    cleanup.push(() => rm(tmp, { recursive: true, force: true }));
    const db = await createTestDatabase();
    cleanup.push(() => db.drop());
    const database = (db.config as { url: string }).url;
    // Both look for due deliveries every 100 ms, and are woken by each other's events too.
    const env = { CAIRN_WEBHOOK_ALLOW_PRIVATE: '1', CAIRN_WEBHOOK_POLL_SECONDS: '0.1' };
    const a = await spawnServer({ port: await freePort(), dataDir: join(tmp, 'a'), database, env });
    cleanup.push(() => a.kill('SIGKILL'));
    const b = await spawnServer({ port: await freePort(), dataDir: join(tmp, 'b'), database, env });
    cleanup.push(() => b.kill('SIGKILL'));
    const token = (await readFile(join(tmp, 'a', 'admin-token'), 'utf8')).trim();
    const receiver = await startWebhookReceiver();
    cleanup.push(() => receiver.close());
    const api = (server: string, path: string, body: unknown) =>
      fetch(`${server}/api/v1/workspaces/default/${path}`, {
        method: 'POST',
        headers: { Authorization: `Bearer ${token}` },
        body: JSON.stringify(body),
      });
    const created = await api(a.url, 'webhooks', { url: receiver.url, events: ['deployment.failed'] });
    assert.equal(created.status, 201);
    const { id, secret } = (await created.json()) as { id: number; secret: string };
    receiver.secret = secret;
    // 200 events, through both replicas at once.
    const answers = await Promise.all(
      Array.from({ length: 200 }, (_, i) => api(i % 2 === 0 ? a.url : b.url, `webhooks/${id}/test`, {})),
    );
    assert.deepEqual([...new Set(answers.map((r) => r.status))], [202]);
    const queued = await Promise.all(
      answers.map(async (r) => ((await r.json()) as { messageId: string }).messageId),
    );
    assert.equal(new Set(queued).size, 200);
    await receiver.waitFor(200, () => true, 60_000);
    await new Promise((r) => setTimeout(r, 2000));
    const ids = receiver.received.map((w) => w.id);
    assert.equal(new Set(ids).size, 200);
    assert.equal(ids.length, 200, 'a delivery was sent more than once');
    assert.deepEqual([...ids].sort(), [...queued].sort());
    for (const w of receiver.received) assert.equal(w.verifyError, undefined);
  });
});
