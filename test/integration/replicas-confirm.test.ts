import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { startAgent } from '../helpers/agent-process.ts';
import { deployWorld, profileTarget, writeScript } from '../helpers/deploy-fixtures.ts';
import { type NginxProcess, startNginx } from '../helpers/nginx-process.ts';
import { RUN_TAG } from '../helpers/nix.ts';
import { S3RVER_CREDENTIALS, startS3Server } from '../helpers/s3-server.ts';
import { adminApi, createTestDatabase, type TestServer, testPostgresUrl } from '../helpers/server.ts';
import { freePort, type ServerProcess, spawnServer } from '../helpers/server-process.ts';
import { sleep } from '../helpers/staged-rollout.ts';

/** When the replica accepted connections of `agent` (its debug log's "agent connected" lines). */
function connectionsOf(server: ServerProcess, agent: string): number[] {
  return server.lines.flatMap((line) => {
    try {
      const e = JSON.parse(line) as { msg?: string; agent?: string; time?: number };
      return e.msg === 'agent connected' && e.agent === agent ? [e.time ?? 0] : [];
    } catch {
      return [];
    }
  });
}

async function until<T>(
  what: () => string,
  probe: () => Promise<T | undefined> | T | undefined,
  ms = 30_000,
) {
  const end = Date.now() + ms;
  for (;;) {
    const got = await probe();
    if (got !== undefined) return got;
    if (Date.now() > end) throw new Error(`Timed out waiting for ${what()}`);
    await sleep(100);
  }
}

/**
 * The confirm step after activation (the agent reconnects, and only a server reached over the
 * new connection confirms the deployment) landing on another replica than the one the agent
 * activated under: the replica holding the agent is SIGKILLed while the switch runs, and nginx
 * sends the agent's confirming connection to the other. Real server processes on one PostgreSQL
 * database and one S3 bucket (s3rver), real nginx, a real agent and the real Nix.
 */
describe('confirming a deployment on another replica', {
  skip: !testPostgresUrl() && 'CAIRN_TEST_DATABASE_URL unset',
}, () => {
  const cleanup: Array<() => Promise<unknown>> = [];
  after(async () => {
    for (const c of cleanup.reverse()) await c().catch(() => {});
  });

  it('ends succeeded when the replica the agent activated under dies and the confirm lands on the other', async () => {
    const tmp = await mkdtemp(join(tmpdir(), 'cairn-replicas-confirm-'));
    cleanup.push(() => rm(tmp, { recursive: true, force: true }));
    const s3 = await startS3Server();
    cleanup.push(() => s3.stop());
    const db = await createTestDatabase();
    cleanup.push(() => db.drop());
    const database = (db.config as { url: string }).url;
    const blobStore = `s3://${s3.bucket}?endpoint=${encodeURIComponent(s3.endpoint)}&path-style=true`;
    const replica = async (name: string) => {
      const server = await spawnServer({
        port: await freePort(),
        dataDir: join(tmp, name),
        database,
        args: ['--blob-store', blobStore],
        env: { ...S3RVER_CREDENTIALS },
        logLevel: 'debug',
      });
      cleanup.push(() => server.kill('SIGKILL'));
      return server;
    };
    const a = await replica('a');
    const b = await replica('b');
    const nginx: NginxProcess = await startNginx([a.url, b.url].map((u) => new URL(u).host));
    cleanup.push(() => nginx.stop());
    const adminToken = (await readFile(join(tmp, 'a', 'admin-token'), 'utf8')).trim();
    const world = await deployWorld({ url: nginx.url, adminToken } as TestServer);

    const profile = join(world.profiles, 'roamer');
    const agent = await startAgent({
      name: 'roamer',
      token: await world.createAgent('roamer'),
      server: nginx.url,
      profile,
    });
    cleanup.push(() => agent.stop());
    await agent.waitFor(/connected to/);
    const holder = await until(
      () => 'a replica to log the agent',
      () => [a, b].find((r) => connectionsOf(r, 'roamer').length > 0),
    );
    const other = holder === a ? b : a;

    // A NixOS-kind closure whose switch says it started, then takes 3 s: time to kill the holder.
    const record = join(tmp, 'record');
    const name = `confirm-elsewhere-${RUN_TAG}`;
    const paths = await world.publish([
      {
        name,
        script: [
          'mkdir -p $out/bin',
          'echo 24.05 > $out/nixos-version',
          writeScript('bin/switch-to-configuration', `echo "$1" >> ${record}\nsleep 3\necho switched`),
        ].join('\n'),
      },
    ]);
    const storePath = paths.get(name)!;
    // Posted through the replica that does not hold the agent: it reaches it by a doorbell.
    const posted = (await adminApi({ url: other.url, adminToken } as TestServer, 'POST', '/rollouts', {
      agents: { roamer: storePath },
    })) as { deployments: Array<{ id: number }> };
    const id = posted.deployments[0]!.id;

    await until(
      () => `the switch to start:\n${agent.lines.join('\n')}`,
      async () => ((await readFile(record, 'utf8').catch(() => '')).includes('switch') ? true : undefined),
    );
    const killedAt = Date.now();
    await holder.kill('SIGKILL');

    const deployment = await until(
      () => `deployment ${id} to finish:\n${agent.lines.join('\n')}`,
      async () => {
        const d = (await adminApi(
          { url: other.url, adminToken } as TestServer,
          'GET',
          `/deployments/${id}`,
        )) as { state: string; reason: string | null };
        return ['pending', 'running'].includes(d.state) ? undefined : d;
      },
      60_000,
    );
    assert.deepEqual(deployment, { ...deployment, state: 'succeeded', reason: null });
    // The confirming connection was the other replica's, after the kill, and it confirmed.
    assert.ok(
      connectionsOf(other, 'roamer').some((t) => t > killedAt),
      'no connection to the other replica',
    );
    const { lines } = (await adminApi(
      { url: other.url, adminToken } as TestServer,
      'GET',
      `/deployments/${id}/logs`,
    )) as { lines: Array<{ text: string }> };
    assert.ok(
      lines.some((l) => l.text.includes('the server confirmed the deployment')),
      lines.map((l) => l.text).join('\n'),
    );
    assert.equal(await profileTarget(profile), storePath);
    // Switched once: not rolled back, not run again.
    assert.equal(await readFile(record, 'utf8'), 'switch\n');
  });
});
