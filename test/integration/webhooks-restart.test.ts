import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { startAgent } from '../helpers/agent-process.ts';
import { plainPackage } from '../helpers/deploy-fixtures.ts';
import { buildPackages, deleteFromStore, RUN_TAG } from '../helpers/nix.ts';
import { cli, createTestDatabase } from '../helpers/server.ts';
import { freePort, type ServerProcess, spawnServer } from '../helpers/server-process.ts';
import { startWebhookReceiver } from '../helpers/webhook-receiver.ts';

describe('webhooks across a server killed with SIGKILL', () => {
  const cleanup: Array<() => Promise<unknown>> = [];
  after(async () => {
    for (const c of cleanup.reverse()) await c().catch(() => {});
  });

  it('delivers an event whose delivery was cut by the kill after the restart, with the same webhook-id', async () => {
    const dataDir = await mkdtemp(join(tmpdir(), 'cairn-wh-restart-'));
    cleanup.push(() => rm(dataDir, { recursive: true, force: true }));
    const port = await freePort();
    const db = await createTestDatabase();
    cleanup.push(() => db.drop());
    const database = db.config.kind === 'sqlite' ? `sqlite:${db.config.file}` : db.config.url;
    // The receiver on 127.0.0.1 needs private addresses allowed; a short timeout keeps the claim
    // of a killed replica short on PostgreSQL (SQLite's next process frees it at start).
    const settings = {
      CAIRN_WEBHOOK_ALLOW_PRIVATE: '1',
      CAIRN_WEBHOOK_TIMEOUT_SECONDS: '2',
      CAIRN_WEBHOOK_POLL_SECONDS: '0.5',
    };
    let server: ServerProcess = await spawnServer({ port, dataDir, database, env: settings });
    cleanup.push(() => server.kill('SIGKILL'));
    const receiver = await startWebhookReceiver();
    cleanup.push(() => receiver.close());
    const env = {
      CAIRN_SERVER: server.url,
      CAIRN_TOKEN: (await readFile(join(dataDir, 'admin-token'), 'utf8')).trim(),
    };
    assert.equal((await cli(['cache', 'create', 'main'], env)).code, 0);
    const created = await cli(
      ['webhook', 'create', receiver.url, '--event', 'deployment.succeeded', '--json'],
      env,
    );
    assert.equal(created.code, 0, created.stderr);
    receiver.secret = (JSON.parse(created.stdout) as { secret: string }).secret;
    const token = (await cli(['agent', 'create', 'k1'], env)).stdout.trim();
    const agent = await startAgent({
      name: 'k1',
      token,
      server: server.url,
      profile: join(dataDir, 'profile-k1'),
    });
    cleanup.push(() => agent.stop());
    await agent.waitFor(/connected to/);
    const paths = await buildPackages([plainPackage(`wh-kill-${RUN_TAG}`)]);
    const path = paths.get(`wh-kill-${RUN_TAG}`)!;
    assert.equal((await cli(['push', 'main', path], env)).code, 0);
    await deleteFromStore([path]);
    const file = join(dataDir, 'deploy.json');
    await writeFile(file, JSON.stringify({ agents: { k1: path } }));

    // The first attempt is held unanswered: the server is killed while it waits.
    receiver.answer('hold');
    const r = await cli(['deploy', 'activate', file, '--timeout', '60s'], env);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    const [first] = await receiver.waitFor(1);
    await server.kill('SIGKILL');
    server = await spawnServer({ port, dataDir, database, env: settings });

    const got = await receiver.waitFor(2, () => true, 30_000);
    assert.equal(got[1]!.status, 200);
    assert.equal(got[1]!.id, first!.id, 'the same webhook-id as the attempt the kill cut');
    for (const w of got) assert.equal(w.verifyError, undefined);
    assert.equal(got[1]!.payload!.type, 'deployment.succeeded');
    assert.equal(got[1]!.payload!.data.agent, 'k1');
    // Delivered: not sent again.
    await new Promise((r) => setTimeout(r, 1500));
    assert.equal(receiver.received.length, 2);
    const deliveries = await cli(['webhook', 'deliveries', '1', '--json'], env);
    const [d] = JSON.parse(deliveries.stdout) as Array<{ state: string; messageId: string }>;
    assert.equal(d!.state, 'succeeded');
    assert.equal(d!.messageId, first!.id);
  });
});

describe('agent.offline across a server restart', () => {
  const cleanup: Array<() => Promise<unknown>> = [];
  after(async () => {
    for (const c of cleanup.reverse()) await c().catch(() => {});
  });

  it('is not sent for agents that reconnect within the grace period, and is sent for one that goes away', async () => {
    const dataDir = await mkdtemp(join(tmpdir(), 'cairn-wh-offline-'));
    cleanup.push(() => rm(dataDir, { recursive: true, force: true }));
    const port = await freePort();
    const db = await createTestDatabase();
    cleanup.push(() => db.drop());
    const database = db.config.kind === 'sqlite' ? `sqlite:${db.config.file}` : db.config.url;
    const settings = {
      CAIRN_WEBHOOK_ALLOW_PRIVATE: '1',
      CAIRN_AGENT_OFFLINE_GRACE_SECONDS: '8',
      CAIRN_WEBHOOK_POLL_SECONDS: '0.2',
    };
    let server: ServerProcess = await spawnServer({ port, dataDir, database, env: settings });
    cleanup.push(() => server.kill('SIGKILL'));
    const receiver = await startWebhookReceiver();
    cleanup.push(() => receiver.close());
    const env = {
      CAIRN_SERVER: server.url,
      CAIRN_TOKEN: (await readFile(join(dataDir, 'admin-token'), 'utf8')).trim(),
    };
    const created = await cli(['webhook', 'create', receiver.url, '--event', 'agent.offline', '--json'], env);
    assert.equal(created.code, 0, created.stderr);
    receiver.secret = (JSON.parse(created.stdout) as { secret: string }).secret;
    const token = (await cli(['agent', 'create', 'stay'], env)).stdout.trim();
    const agent = await startAgent({ name: 'stay', token, server: server.url, profile: join(dataDir, 'p') });
    cleanup.push(() => agent.stop());
    await agent.waitFor(/connected to/);
    // Connected for longer than the grace period: it was last seen (said hello) that long ago.
    await new Promise((r) => setTimeout(r, 8500));
    // The restart takes a few seconds (and on PostgreSQL the old server marks its agents offline
    // as it stops), well under the grace period.
    const stoppedAt = Date.now();
    await server.kill('SIGTERM');
    server = await spawnServer({ port, dataDir, database, env: settings });
    const deadline = Date.now() + 30_000;
    while (agent.lines.filter((l) => /connected to/.test(l)).length < 2) {
      assert.ok(Date.now() < deadline, `agent did not reconnect:\n${agent.lines.join('\n')}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    // Well past the grace period after the restart: it was back in time, nothing is sent.
    await new Promise((r) => setTimeout(r, stoppedAt + 10_000 - Date.now()));
    assert.deepEqual(
      receiver.received.map((w) => w.payload?.type),
      [],
    );
    await agent.stop();
    const [offline] = await receiver.waitFor(1, () => true, 20_000);
    assert.equal(offline!.verifyError, undefined);
    assert.equal(offline!.payload!.type, 'agent.offline');
    assert.equal(offline!.payload!.data.agent, 'stay');
  });
});
