import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { signInToDashboard } from '../helpers/dashboard-session.ts';
import { type PendingRollout, pendingRollout } from '../helpers/pending-rollout.ts';
import { adminApi, startTestServer, type TestServer } from '../helpers/server.ts';

/** Reads an open event stream until it ends or `ms` pass: what it sent, and whether it ended. */
async function readUntilEnd(body: ReadableStream<Uint8Array>, ms: number) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let text = '';
  const deadline = Date.now() + ms;
  for (;;) {
    const left = deadline - Date.now();
    if (left <= 0) {
      await reader.cancel();
      return { text, ended: false };
    }
    const r = await Promise.race([
      reader.read(),
      new Promise<'timeout'>((resolve) => setTimeout(() => resolve('timeout'), left)),
    ]);
    if (r === 'timeout') continue;
    if (r.done) return { text, ended: true };
    text += decoder.decode(r.value);
  }
}

/**
 * Issue #23, finding 8: an event stream opened before its token was revoked kept delivering.
 * Each stream here (the API's rollout events, the dashboard's deployment events and rollout
 * changes) is opened with a token, the token is revoked, and the stream must end within seconds,
 * without the `end` event that means "over", and reconnecting must be refused.
 */
describe('event streams end when their token is revoked', () => {
  let server: TestServer;
  let plain: PendingRollout;
  let staged: number;
  before(async () => {
    server = await startTestServer();
    plain = await pendingRollout(server, 'sse-plain');
    // A staged rollout to another agent that never connects: its dashboard stream stays open.
    const other = await pendingRollout(server, 'sse-staged');
    const created = await adminApi(server, 'POST', '/rollouts', {
      agents: { 'sse-staged': other.storePath },
      rollout: { batches: ['100%'], offline: 'wait' },
    });
    staged = created.id as number;
  });
  after(async () => {
    await server.stop();
  });

  /** A fresh token with the activate scope: its secret and id. */
  const activateToken = async (name: string) => {
    const r = await adminApi(server, 'POST', '/tokens', { name, scopes: ['activate'] });
    return { secret: r.token as string, id: r.id as string };
  };
  const revoke = async (id: string) => {
    const res = await fetch(`${server.url}/api/v1/workspaces/default/tokens/${id}`, {
      method: 'DELETE',
      headers: { Authorization: `Bearer ${server.adminToken}` },
    });
    assert.ok(res.ok, `${res.status} ${await res.text()}`);
  };

  it('ends GET /rollouts/:id/events (the CLI follows with it) and refuses it again', async () => {
    const token = await activateToken('follower');
    const url = `${server.url}/api/v1/workspaces/default/rollouts/${plain.rolloutId}/events`;
    const res = await fetch(url, { headers: { Authorization: `Bearer ${token.secret}` } });
    assert.equal(res.status, 200);
    const reading = readUntilEnd(res.body!, 5000);
    await new Promise((r) => setTimeout(r, 200));
    const revokedAt = Date.now();
    await revoke(token.id);
    const { text, ended } = await reading;
    assert.ok(ended, `still open ${Date.now() - revokedAt} ms after the revocation: ${text}`);
    assert.match(text, /event: state/, 'the stream was delivering before');
    assert.doesNotMatch(text, /event: end/);
    const again = await fetch(url, { headers: { Authorization: `Bearer ${token.secret}` } });
    assert.equal(again.status, 401);
  });

  for (const [what, path] of [
    ['deployment events', () => `/deployments/${plain.deploymentId}/events`],
    ['rollout changes', () => `/rollouts/${staged}/events`],
  ] as const) {
    it(`ends the dashboard's ${what} of a session whose token is revoked`, async () => {
      const token = await activateToken(`browser-${what.split(' ')[0]}`);
      const session = await signInToDashboard(server.url, token.secret);
      const res = await fetch(`${server.url}${path()}`, {
        headers: { Cookie: session.cookie, Accept: 'text/event-stream' },
        redirect: 'manual',
      });
      assert.equal(res.status, 200);
      const reading = readUntilEnd(res.body!, 5000);
      await new Promise((r) => setTimeout(r, 200));
      await revoke(token.id);
      const { text, ended } = await reading;
      assert.ok(ended, `still open after the revocation: ${text}`);
      assert.doesNotMatch(text, /event: end/);
      const again = await fetch(`${server.url}${path()}`, {
        headers: { Cookie: session.cookie, Accept: 'text/event-stream' },
        redirect: 'manual',
      });
      assert.notEqual(again.status, 200);
    });
  }
});
