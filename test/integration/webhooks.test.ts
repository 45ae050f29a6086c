import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { Webhook } from 'standardwebhooks';
import { nixosPackage, plainPackage, writeDeployJson } from '../helpers/deploy-fixtures.ts';
import { useDeployTestbed } from '../helpers/deploy-testbed.ts';
import { RUN_TAG } from '../helpers/nix.ts';
import { cli, startTestServer, type TestServer } from '../helpers/server.ts';
import { operate, waitRollout } from '../helpers/staged-rollout.ts';
import { startWebhookReceiver, type WebhookReceiver } from '../helpers/webhook-receiver.ts';

/** Webhooks go to the receiver on 127.0.0.1: these servers allow private addresses, quick retries. */
const ALLOW = {
  CAIRN_WEBHOOK_ALLOW_PRIVATE: '1',
  CAIRN_WEBHOOK_RETRY_SCHEDULE: '300ms,300ms',
  CAIRN_WEBHOOK_TIMEOUT_SECONDS: '1',
};

const envOf = (server: TestServer) => ({ CAIRN_SERVER: server.url, CAIRN_TOKEN: server.adminToken });

/** Sends a webhook.test event with `cairn webhook test ID`; returns its message id. */
async function testWebhook(server: TestServer, id: string): Promise<string> {
  const r = await cli(['webhook', 'test', id], envOf(server));
  assert.equal(r.code, 0, r.stderr);
  return r.stdout.trim();
}

/** Creates a webhook with the CLI; returns its id and tells the receiver its secret. */
async function createWebhook(
  server: TestServer,
  receiver: WebhookReceiver,
  events: string,
  url = receiver.url,
): Promise<string> {
  const r = await cli(['webhook', 'create', url, '--event', events, '--json'], envOf(server));
  assert.equal(r.code, 0, r.stderr);
  const created = JSON.parse(r.stdout) as { id: number; secret: string };
  assert.match(created.secret, /^whsec_[A-Za-z0-9+/]+=*$/);
  receiver.secret = created.secret;
  return String(created.id);
}

describe('webhooks of deployments made by real agents', () => {
  const bed = useDeployTestbed({ env: ALLOW });
  let receiver: WebhookReceiver;
  before(async () => {
    receiver = await startWebhookReceiver();
  });
  after(() => receiver?.close());

  it('sends a succeeded and a rolled-back deployment once each, signed, with ids and a dashboard URL', async () => {
    await createWebhook(bed.server, receiver, 'deployment.succeeded,deployment.rolled-back');
    const record = `${bed.world.profiles}/switch-record`;
    const paths = await bed.world.publish([
      nixosPackage(`wh-good-${RUN_TAG}`, record),
      nixosPackage(`wh-bad-${RUN_TAG}`, record, { exit: 1 }),
    ]);
    await bed.agent('web1');
    const good = await bed.activate({ agents: { web1: paths.get(`wh-good-${RUN_TAG}`)! } });
    assert.equal(good.code, 0, good.stdout + good.stderr);
    const bad = await bed.activate({ agents: { web1: paths.get(`wh-bad-${RUN_TAG}`)! } });
    assert.equal(bad.code, 1, bad.stdout + bad.stderr);
    const got = await receiver.waitFor(2);
    // A moment more: no duplicate follows.
    await new Promise((r) => setTimeout(r, 1500));
    assert.equal(receiver.received.length, 2, JSON.stringify(receiver.received.map((w) => w.body)));
    for (const w of got) assert.equal(w.verifyError, undefined, w.body);
    const [succeeded, rolledBack] = got.map((w) => w.payload!);
    assert.equal(succeeded!.type, 'deployment.succeeded');
    assert.equal(rolledBack!.type, 'deployment.rolled-back');
    assert.equal(succeeded!.data.agent, 'web1');
    assert.equal(rolledBack!.data.state, 'rolled-back');
    assert.notEqual(succeeded!.data.deploymentId, rolledBack!.data.deploymentId);
    assert.equal(succeeded!.data.url, `${bed.server.url}/deployments/${succeeded!.data.deploymentId}`);
    // The dashboard URL is a real page of the deployment (for a signed-in user).
    const page = await fetch(String(rolledBack!.data.url), { redirect: 'manual' });
    assert.ok([200, 302, 303].includes(page.status), `dashboard URL answered ${page.status}`);
    assert.notEqual(got[0]!.id, got[1]!.id);
  });

  it('sends deployment.started once when an agent starts a deployment', async () => {
    const r2 = await startWebhookReceiver();
    try {
      await createWebhook(bed.server, r2, 'deployment.started');
      const paths = await bed.world.publish([plainPackage(`wh-start-${RUN_TAG}`)]);
      await bed.agent('box1');
      const r = await bed.activate({ agents: { box1: paths.get(`wh-start-${RUN_TAG}`)! } });
      assert.equal(r.code, 0, r.stdout + r.stderr);
      const [w] = await r2.waitFor(1);
      await new Promise((r) => setTimeout(r, 1000));
      assert.equal(r2.received.length, 1);
      assert.equal(w!.verifyError, undefined);
      assert.equal(w!.payload!.type, 'deployment.started');
      assert.equal(w!.payload!.data.agent, 'box1');
    } finally {
      await r2.close();
    }
  });
});

describe('webhook delivery: retries, 410, endpoints that keep failing', () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer({ env: ALLOW });
  });
  after(() => server?.stop());

  it('retries a receiver that answers 500 twice; the third try succeeds with the same webhook-id', async () => {
    const receiver = await startWebhookReceiver();
    try {
      const id = await createWebhook(server, receiver, 'deployment.failed');
      receiver.answer(500, 500);
      const t = await cli(['webhook', 'test', id], envOf(server));
      assert.equal(t.code, 0, t.stderr);
      const got = await receiver.waitFor(3);
      assert.deepEqual(
        got.map((w) => w.status),
        [500, 500, 200],
      );
      assert.equal(new Set(got.map((w) => w.id)).size, 1, 'the same webhook-id on every attempt');
      assert.equal(got[0]!.id, t.stdout.trim());
      for (const w of got) {
        assert.equal(w.verifyError, undefined);
        assert.equal(w.payload!.type, 'webhook.test');
      }
      const list = await cli(['webhook', 'deliveries', id, '--json'], envOf(server));
      const [d] = JSON.parse(list.stdout) as Array<{ state: string; attempts: number; lastStatus: number }>;
      assert.equal(d!.state, 'succeeded');
      assert.equal(d!.attempts, 3);
      assert.equal(d!.lastStatus, 200);
    } finally {
      await receiver.close();
    }
  });

  it('gives up on an attempt without an answer after the timeout, and retries it', async () => {
    const receiver = await startWebhookReceiver();
    try {
      const id = await createWebhook(server, receiver, 'deployment.failed');
      receiver.answer('hold');
      const started = Date.now();
      const messageId = await testWebhook(server, id);
      const got = await receiver.waitFor(2);
      assert.ok(Date.now() - started >= 1000, 'retried before the 1 s timeout');
      assert.deepEqual(
        got.map((w) => [w.id, w.status]),
        [
          [messageId, undefined],
          [messageId, 200],
        ],
      );
      const list = await cli(['webhook', 'deliveries', id, '--json'], envOf(server));
      assert.deepEqual(
        (JSON.parse(list.stdout) as Array<{ state: string; attempts: number }>).map((d) => [
          d.state,
          d.attempts,
        ]),
        [['succeeded', 2]],
      );
    } finally {
      await receiver.close();
    }
  });

  it('counts a redirect as a failed attempt and does not follow it', async () => {
    const receiver = await startWebhookReceiver();
    try {
      const id = await createWebhook(server, receiver, 'deployment.failed');
      receiver.answer(302);
      await testWebhook(server, id);
      const got = await receiver.waitFor(2);
      await new Promise((r) => setTimeout(r, 500));
      assert.equal(receiver.received.length, 2);
      assert.deepEqual(
        got.map((w) => [w.status, w.path]),
        [
          [302, '/hook'],
          [200, '/hook'],
        ],
      );
    } finally {
      await receiver.close();
    }
  });

  it('signs with the old and the new secret while a rotated secret is kept', async () => {
    const receiver = await startWebhookReceiver();
    try {
      const id = await createWebhook(server, receiver, 'deployment.failed');
      const old = receiver.secret;
      const rotated = await cli(['webhook', 'rotate', id, '--keep', '1h'], envOf(server));
      assert.equal(rotated.code, 0, rotated.stderr);
      const fresh = rotated.stdout.trim();
      assert.match(fresh, /^whsec_/);
      assert.notEqual(fresh, old);
      // The receiver still verifies with the old secret...
      await testWebhook(server, id);
      const [w] = await receiver.waitFor(1);
      assert.equal(w!.verifyError, undefined);
      assert.equal(w!.signature.split(' ').length, 2);
      // ...and a receiver that switched verifies the same delivery with the new one.
      const headers = {
        'webhook-id': w!.id,
        'webhook-timestamp': w!.timestamp,
        'webhook-signature': w!.signature,
      };
      assert.doesNotThrow(() => new Webhook(fresh).verify(w!.body, headers));
      // Rotated again without keeping the old one: only the newest secret signs.
      const again = await cli(['webhook', 'rotate', id, '--keep', '0'], envOf(server));
      assert.equal(again.code, 0, again.stderr);
      receiver.secret = again.stdout.trim();
      await testWebhook(server, id);
      const [, w2] = await receiver.waitFor(2);
      assert.equal(w2!.verifyError, undefined);
      assert.equal(w2!.signature.split(' ').length, 1);
      const h2 = {
        'webhook-id': w2!.id,
        'webhook-timestamp': w2!.timestamp,
        'webhook-signature': w2!.signature,
      };
      assert.throws(() => new Webhook(fresh).verify(w2!.body, h2));
      const bad = await cli(['webhook', 'rotate', id, '--keep', '30d'], envOf(server));
      assert.equal(bad.code, 2);
      assert.match(bad.stderr, /--keep: expected a duration from 0 to 7d/);
    } finally {
      await receiver.close();
    }
  });

  it('disables an endpoint that answers 410 Gone, and shows it disabled', async () => {
    const receiver = await startWebhookReceiver();
    try {
      const id = await createWebhook(server, receiver, 'rollout.failed');
      receiver.answer(410);
      await testWebhook(server, id);
      await receiver.waitFor(1);
      let state = '';
      for (let i = 0; i < 100 && state !== 'disabled'; i++) {
        const list = await cli(['webhook', 'list', '--json'], envOf(server));
        state = (JSON.parse(list.stdout) as Array<{ id: number; state: string }>).find(
          (w) => String(w.id) === id,
        )!.state;
        await new Promise((r) => setTimeout(r, 50));
      }
      assert.equal(state, 'disabled');
      const table = await cli(['webhook', 'list'], envOf(server));
      assert.match(table.stdout, new RegExp(`${id}\\s+\\S+\\s+rollout.failed\\s+disabled: answered 410`));
      // Nothing more is sent to it: a test is refused, not queued.
      const again = await cli(['webhook', 'test', id], envOf(server));
      assert.equal(again.code, 1);
      assert.match(again.stderr, /disabled/);
      await new Promise((r) => setTimeout(r, 700));
      assert.equal(receiver.received.length, 1);
      // Enabled again, it gets events again.
      assert.equal((await cli(['webhook', 'enable', id], envOf(server))).code, 0);
      await testWebhook(server, id);
      await receiver.waitFor(2);
    } finally {
      await receiver.close();
    }
  });

  it('disables an endpoint whose every attempt failed, with the reason', async () => {
    const receiver = await startWebhookReceiver();
    try {
      const id = await createWebhook(server, receiver, 'agent.offline');
      receiver.answer(503, 503, 503);
      await testWebhook(server, id);
      await receiver.waitFor(3);
      let listed: { state: string; disabledReason: string | null } | undefined;
      for (let i = 0; i < 100 && listed?.state !== 'disabled'; i++) {
        const list = await cli(['webhook', 'list', '--json'], envOf(server));
        listed = (
          JSON.parse(list.stdout) as Array<{ id: number; state: string; disabledReason: string }>
        ).find((w) => String(w.id) === id);
        await new Promise((r) => setTimeout(r, 50));
      }
      assert.equal(listed?.state, 'disabled');
      assert.match(listed!.disabledReason!, /every attempt failed .*answered 503/);
      const deliveries = await cli(['webhook', 'deliveries', id], envOf(server));
      assert.match(deliveries.stdout, /webhook\.test\s+failed\s+3\s+503/);
    } finally {
      await receiver.close();
    }
  });

  it('rejects a bad URL, an unknown event and a malformed body with clear errors', async () => {
    const env = envOf(server);
    const badUrl = await cli(['webhook', 'create', 'not a url', '--event', 'deployment.failed'], env);
    assert.equal(badUrl.code, 2);
    assert.match(badUrl.stderr, /url: is not a URL \(not a url\)/);
    const ftp = await cli(['webhook', 'create', 'ftp://example.com/x', '--event', 'deployment.failed'], env);
    assert.match(ftp.stderr, /url: must be an http or https URL/);
    const badEvent = await cli(
      ['webhook', 'create', 'https://example.com/x', '--event', 'deployment.exploded'],
      env,
    );
    assert.equal(badEvent.code, 2);
    assert.match(badEvent.stderr, /unknown event 'deployment.exploded'; expected one of deployment.started/);
    const badId = await cli(['webhook', 'delete', 'abc'], env);
    assert.match(badId.stderr, /webhook id: expected a whole number/);
    // The API says the same to a client that skips the CLI.
    const res = await fetch(`${server.url}/api/v1/workspaces/default/webhooks`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${server.adminToken}` },
      body: JSON.stringify({ url: 'https://example.com/x', events: ['nope'], extra: 1 }),
    });
    assert.equal(res.status, 400);
    const body = (await res.json()) as { code: string; validations: Array<{ field: string }> };
    assert.equal(body.code, 'INVALID_ARGUMENT');
    assert.deepEqual(body.validations.map((v) => v.field).sort(), ['(body)', 'events.0']);
    const missing = await fetch(`${server.url}/api/v1/workspaces/default/webhooks/999`, {
      method: 'DELETE',
      headers: { Authorization: `Bearer ${server.adminToken}` },
    });
    assert.equal(missing.status, 404);
  });

  it('needs the admin scope', async () => {
    const t = await cli(['token', 'create', '--scope', 'activate', '--name', 'ci'], envOf(server));
    const r = await cli(['webhook', 'list'], { CAIRN_SERVER: server.url, CAIRN_TOKEN: t.stdout.trim() });
    assert.equal(r.code, 2);
    assert.match(r.stderr, /lacks the admin scope/);
  });
});

describe('webhooks to private addresses', () => {
  let server: TestServer;
  let receiver: WebhookReceiver;
  before(async () => {
    // No CAIRN_WEBHOOK_ALLOW_PRIVATE: the default.
    server = await startTestServer({ env: { CAIRN_WEBHOOK_RETRY_SCHEDULE: '' } });
    receiver = await startWebhookReceiver();
  });
  after(async () => {
    await receiver?.close();
    await server?.stop();
  });

  it('refuses a webhook to 127.0.0.1 when it is created', async () => {
    const r = await cli(['webhook', 'create', receiver.url, '--event', 'deployment.failed'], envOf(server));
    assert.equal(r.code, 2);
    assert.match(r.stderr, /127\.0\.0\.1 is a loopback address.*CAIRN_WEBHOOK_ALLOW_PRIVATE=1/);
    const list = await cli(['webhook', 'list', '--json'], envOf(server));
    assert.deepEqual(JSON.parse(list.stdout), []);
  });

  it('refuses to send to a name that resolves to a loopback address, and sends nothing', async () => {
    const id = await createWebhook(
      server,
      receiver,
      'deployment.failed',
      `http://localhost:${receiver.port}/hook`,
    );
    await testWebhook(server, id);
    let d: { state: string; lastError: string | null } | undefined;
    for (let i = 0; i < 200 && d?.state !== 'failed'; i++) {
      const out = await cli(['webhook', 'deliveries', id, '--json'], envOf(server));
      d = (JSON.parse(out.stdout) as Array<{ state: string; lastError: string | null }>)[0];
      await new Promise((r) => setTimeout(r, 50));
    }
    assert.equal(d?.state, 'failed');
    assert.match(d!.lastError!, /refused: localhost resolves to (127\.0\.0\.1|::1), a loopback address/);
    assert.equal(receiver.received.length, 0);
  });
});

describe('webhooks of staged rollouts and agents', () => {
  // Agents count as offline after 1 s here (5 minutes by default), looked for every 0.5 s.
  const bed = useDeployTestbed({
    env: { ...ALLOW, CAIRN_AGENT_OFFLINE_GRACE_SECONDS: '1', CAIRN_WEBHOOK_POLL_SECONDS: '0.5' },
  });
  let receiver: WebhookReceiver;
  before(async () => {
    receiver = await startWebhookReceiver();
    await createWebhook(
      bed.server,
      receiver,
      'rollout.paused,rollout.succeeded,rollout.failed,agent.offline,agent.reboot-required,deployment.failed',
    );
  });
  after(() => receiver?.close());
  const ofType = (type: string) => (w: { payload?: { type: string } | undefined }) =>
    w.payload?.type === type;
  const activateAsync = async (body: object): Promise<number> => {
    const file = await writeDeployJson(bed.world.profiles, body);
    const r = await cli(['deploy', 'activate', file, '--async'], bed.world.env);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    return Number(r.stdout.trim());
  };

  it('tells of a paused rollout, and of it succeeding once resumed', async () => {
    const record = `${bed.world.profiles}/rollout-record`;
    const paths = await bed.world.publish([nixosPackage(`wh-roll-${RUN_TAG}`, record)]);
    const v1 = paths.get(`wh-roll-${RUN_TAG}`)!;
    await bed.agent('s1');
    await bed.agent('s2');
    const id = await activateAsync({
      agents: { s1: v1, s2: v1 },
      rollout: { canary: ['s1'], batches: ['100%'], bake: '0' },
    });
    assert.equal((await operate(bed.server, id, 'pause')).status, 200);
    const [paused] = await receiver.waitFor(1, ofType('rollout.paused'));
    assert.equal(paused!.verifyError, undefined);
    assert.equal(paused!.payload!.data.rolloutId, id);
    assert.equal(paused!.payload!.data.url, `${bed.server.url}/rollouts/${id}`);
    assert.equal((await operate(bed.server, id, 'resume')).status, 200);
    await waitRollout(bed.server, id, (r) => r.staged.state === 'succeeded');
    const [succeeded] = await receiver.waitFor(1, ofType('rollout.succeeded'));
    assert.equal(succeeded!.verifyError, undefined);
    assert.equal(succeeded!.payload!.data.rolloutId, id);
  });

  it('tells of a failed rollout', async () => {
    const record = `${bed.world.profiles}/rollout-record-2`;
    const paths = await bed.world.publish([nixosPackage(`wh-roll-bad-${RUN_TAG}`, record, { exit: 1 })]);
    const bad = paths.get(`wh-roll-bad-${RUN_TAG}`)!;
    const id = await activateAsync({
      agents: { s1: bad, s2: bad },
      rollout: { canary: ['s1'], batches: ['100%'], bake: '0' },
    });
    await waitRollout(bed.server, id, (r) => r.staged.state === 'failed');
    const [failed] = await receiver.waitFor(1, ofType('rollout.failed'));
    assert.equal(failed!.verifyError, undefined);
    assert.equal(failed!.payload!.data.rolloutId, id);
    assert.equal(failed!.payload!.data.state, 'failed');
  });

  it('tells that a deployment needs a reboot', async () => {
    const record = `${bed.world.profiles}/reboot-record`;
    const link = `${bed.world.profiles}/reboot-current-system`;
    const paths = await bed.world.publish([
      nixosPackage(`wh-base-${RUN_TAG}`, record, { currentSystem: link }),
      nixosPackage(`wh-100-${RUN_TAG}`, record, { exit: 100, currentSystem: link }),
    ]);
    await bed.agent('rb1', { env: { CAIRN_AGENT_CURRENT_SYSTEM: link } });
    assert.equal((await bed.activate({ agents: { rb1: paths.get(`wh-base-${RUN_TAG}`)! } })).code, 0);
    assert.equal((await bed.activate({ agents: { rb1: paths.get(`wh-100-${RUN_TAG}`)! } })).code, 1);
    const [reboot] = await receiver.waitFor(1, ofType('agent.reboot-required'));
    const [failed] = await receiver.waitFor(1, ofType('deployment.failed'));
    assert.equal(reboot!.verifyError, undefined);
    assert.equal(reboot!.payload!.data.agent, 'rb1');
    assert.equal(reboot!.payload!.data.deploymentId, failed!.payload!.data.deploymentId);
  });

  it('tells once that an agent went offline, after the grace period', async () => {
    const agent = await bed.agent('off1');
    const stoppedAt = Date.now();
    await agent.stop();
    const [offline] = await receiver.waitFor(
      1,
      (w) => ofType('agent.offline')(w) && w.payload?.data.agent === 'off1',
    );
    assert.ok(Date.now() - stoppedAt >= 1000, 'announced before the grace period ended');
    assert.equal(offline!.verifyError, undefined);
    assert.equal(offline!.payload!.data.url, `${bed.server.url}/agents/off1`);
    await new Promise((r) => setTimeout(r, 2000));
    assert.equal(
      receiver.received.filter((w) => ofType('agent.offline')(w) && w.payload?.data.agent === 'off1').length,
      1,
    );
  });
});

describe('webhook delivery retention', () => {
  let server: TestServer;
  before(async () => {
    // Deliveries (and deployment logs) are kept 2 seconds here: 30 days by default.
    server = await startTestServer({
      env: { ...ALLOW, CAIRN_LOG_RETENTION_DAYS: String(2 / 86_400), CAIRN_WEBHOOK_POLL_SECONDS: '0.2' },
    });
  });
  after(() => server?.stop());

  it('deletes finished deliveries after the log retention period, and keeps the endpoint', async () => {
    const receiver = await startWebhookReceiver();
    try {
      const id = await createWebhook(server, receiver, 'deployment.failed');
      await testWebhook(server, id);
      await receiver.waitFor(1);
      const listed = async () =>
        (JSON.parse((await cli(['webhook', 'deliveries', id, '--json'], envOf(server))).stdout) as unknown[])
          .length;
      assert.equal(await listed(), 1);
      const deadline = Date.now() + 15_000;
      while ((await listed()) > 0) {
        assert.ok(Date.now() < deadline, 'the delivery was not deleted after the retention period');
        await new Promise((r) => setTimeout(r, 200));
      }
      const list = await cli(['webhook', 'list', '--json'], envOf(server));
      assert.equal((JSON.parse(list.stdout) as unknown[]).length, 1);
    } finally {
      await receiver.close();
    }
  });
});
