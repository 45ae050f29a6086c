import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { adminApi, startTestServer, type TestServer } from '../helpers/server.ts';

/**
 * A cache's retention, quota and pins as the API takes them: every body that does not fit is
 * refused with 400 naming the field, and the cache's settings and pins are as they were.
 * (The CLI's own refusals are in cache-gc.test.ts; these bodies are what a script or a hand-made
 * request could send.)
 */
describe('cache retention, quota and pins: bad request bodies', () => {
  let server: TestServer;
  const cachePath = '/api/v1/workspaces/default/caches/months';

  const send = async (method: string, path: string, body: string, token = server.adminToken) => {
    const res = await fetch(`${server.url}${path}`, {
      method,
      headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' },
      body,
    });
    return {
      status: res.status,
      json: (await res.json()) as { code: string; message: string; validations?: Array<{ field: string }> },
    };
  };
  const settings = async () => {
    const info = await adminApi(server, 'GET', '/caches/months');
    return { retentionSeconds: info.retentionSeconds, quotaBytes: info.quotaBytes };
  };

  before(async () => {
    server = await startTestServer();
    await adminApi(server, 'POST', '/caches', { name: 'months' });
    await adminApi(server, 'PATCH', '/caches/months', { retentionSeconds: 86_400, quotaBytes: 1_000_000 });
  });
  after(async () => server?.stop());

  const BAD_POLICIES: Array<{ body: unknown; field: string }> = [
    { body: { retentionSeconds: -1 }, field: 'retentionSeconds' },
    { body: { retentionSeconds: 0 }, field: 'retentionSeconds' },
    { body: { retentionSeconds: 1.5 }, field: 'retentionSeconds' },
    { body: { retentionSeconds: '7d' }, field: 'retentionSeconds' },
    { body: { retentionSeconds: 11 * 365 * 86_400 }, field: 'retentionSeconds' },
    { body: { quotaBytes: 0 }, field: 'quotaBytes' },
    { body: { quotaBytes: -5 }, field: 'quotaBytes' },
    { body: { quotaBytes: 2 ** 60 }, field: 'quotaBytes' },
    { body: { retentionSeconds: 3600, keepForever: true }, field: 'keepForever' },
  ];
  for (const { body, field } of BAD_POLICIES) {
    it(`PATCH ${JSON.stringify(body)} is 400 INVALID_ARGUMENT naming ${field}, and changes nothing`, async () => {
      const { status, json } = await send('PATCH', cachePath, JSON.stringify(body));
      assert.equal(status, 400, JSON.stringify(json));
      assert.equal(json.code, 'INVALID_ARGUMENT');
      assert.ok(
        json.validations?.some((v) => v.field === field) || json.message.includes(field),
        `the error names ${field}: ${JSON.stringify(json)}`,
      );
      assert.deepEqual(await settings(), { retentionSeconds: 86_400, quotaBytes: 1_000_000 });
    });
  }

  it('refuses an empty body object, a body that is not JSON, and an array, changing nothing', async () => {
    const empty = await send('PATCH', cachePath, '{}');
    assert.equal(empty.status, 400);
    assert.match(empty.json.message, /retentionSeconds, quotaBytes or both/);
    const notJson = await send('PATCH', cachePath, '{"retentionSeconds": 60');
    assert.equal(notJson.status, 400);
    assert.equal(notJson.json.code, 'BAD_REQUEST');
    assert.match(notJson.json.message, /not valid JSON/);
    const array = await send('PATCH', cachePath, '[60]');
    assert.equal(array.status, 400);
    assert.deepEqual(await settings(), { retentionSeconds: 86_400, quotaBytes: 1_000_000 });
  });

  it('refuses a token that is not admin with 403, changing nothing', async () => {
    const pull = await adminApi(server, 'POST', '/tokens', { name: 'reader', scopes: ['cache:months:pull'] });
    const { status, json } = await send('PATCH', cachePath, '{"retentionSeconds": 60}', String(pull.token));
    assert.equal(status, 403, JSON.stringify(json));
    assert.deepEqual(await settings(), { retentionSeconds: 86_400, quotaBytes: 1_000_000 });
  });

  it('null puts a setting back to its default (retention) or none (quota)', async () => {
    const res = await adminApi(server, 'PATCH', '/caches/months', { quotaBytes: null });
    assert.equal(res.quotaBytes, null);
    assert.deepEqual(await settings(), { retentionSeconds: 86_400, quotaBytes: null });
    await adminApi(server, 'PATCH', '/caches/months', { quotaBytes: 1_000_000 });
  });

  it('refuses bad pins (not a store path, a traversal, unknown fields, a past or unreadable expiry) and pins nothing', async () => {
    const pins = `${cachePath}/pins`;
    const bad: Array<{ body: unknown; field: string }> = [
      { body: { storePath: 'hello' }, field: 'storePath' },
      { body: { storePath: '/nix/store/../etc/passwd' }, field: 'storePath' },
      { body: { storePath: '/nix/store/00000000000000000000000000000000-x/../../etc' }, field: 'storePath' },
      { body: {}, field: 'storePath' },
      {
        body: { storePath: '/nix/store/00000000000000000000000000000000-x', expiresAt: 'next tuesday' },
        field: 'expiresAt',
      },
      { body: { storePath: '/nix/store/00000000000000000000000000000000-x', owner: 'me' }, field: 'owner' },
      {
        body: {
          storePath: '/nix/store/00000000000000000000000000000000-x',
          expiresAt: '2020-01-01T00:00:00Z',
        },
        field: 'expiresAt',
      },
    ];
    for (const { body, field } of bad) {
      const { status, json } = await send('POST', pins, JSON.stringify(body));
      assert.equal(status, 400, `${JSON.stringify(body)}: ${JSON.stringify(json)}`);
      assert.equal(json.code, 'INVALID_ARGUMENT');
      assert.ok(
        json.validations?.some((v) => v.field === field) || json.message.includes(field),
        `${JSON.stringify(body)}: the error names ${field}: ${JSON.stringify(json)}`,
      );
    }
    const list = await adminApi(server, 'GET', '/caches/months/pins');
    assert.deepEqual(list.pins, []);
  });
});
