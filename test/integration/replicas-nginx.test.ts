import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { type AgentProcess, startAgent } from '../helpers/agent-process.ts';
import { otherMachineNixEnv, substituterArgs, type TestCache, writeNetrc } from '../helpers/binary-cache.ts';
import { nixosPackage, profileTarget } from '../helpers/deploy-fixtures.ts';
import { type NginxProcess, startNginx } from '../helpers/nginx-process.ts';
import { buildPackages, deleteFromStore, RUN_TAG, run } from '../helpers/nix.ts';
import { S3RVER_CREDENTIALS, startS3Server } from '../helpers/s3-server.ts';
import { cli, createTestDatabase, testPostgresUrl } from '../helpers/server.ts';
import { freePort, type ServerProcess, spawnServer } from '../helpers/server-process.ts';
import { getRollout, type StagedView, sleep } from '../helpers/staged-rollout.ts';

const NAMES = ['1', '2', '3', '4', '5', '6'].map((n) => `lb${n}`);

/** The agents a replica accepted, with when (its debug log's "agent connected" lines). */
function connectedTo(server: ServerProcess): Array<{ agent: string; time: number }> {
  return server.lines.flatMap((line) => {
    try {
      const entry = JSON.parse(line) as { msg?: string; agent?: string; time?: number };
      return entry.msg === 'agent connected' && entry.agent
        ? [{ agent: entry.agent, time: entry.time ?? 0 }]
        : [];
    } catch {
      return [];
    }
  });
}

/**
 * Which replica holds each agent now: the one that accepted its latest connection (an agent
 * reconnects after each switch, and nginx may hand the new connection to the other replica).
 */
function holders(replicas: readonly ServerProcess[]): Map<string, ServerProcess> {
  const latest = new Map<string, { time: number; server: ServerProcess }>();
  for (const server of replicas)
    for (const { agent, time } of connectedTo(server))
      if ((latest.get(agent)?.time ?? -1) <= time) latest.set(agent, { time, server });
  return new Map([...latest].map(([agent, { server }]) => [agent, server]));
}

async function until<T>(
  what: string | (() => string),
  probe: () => T | undefined | Promise<T | undefined>,
  ms = 30_000,
) {
  const end = Date.now() + ms;
  for (;;) {
    const got = await probe();
    if (got !== undefined) return got;
    if (Date.now() > end)
      throw new Error(`Timed out waiting for ${typeof what === 'string' ? what : what()}`);
    await sleep(100);
  }
}

describe('two replicas behind nginx, on one PostgreSQL database and one S3 bucket', {
  skip: !testPostgresUrl() && 'CAIRN_TEST_DATABASE_URL unset',
}, () => {
  const cleanup: Array<() => Promise<unknown>> = [];
  after(async () => {
    for (const c of cleanup.reverse()) await c().catch(() => {});
  });

  it('agents spread over both; pushes land in S3; rollouts through nginx succeed, also when a replica is SIGKILLed mid-rollout', async () => {
    const tmp = await mkdtemp(join(tmpdir(), 'cairn-replicas-nginx-'));
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
    // One after the other: the first creates the workspace and the admin token.
    const a = await replica('a');
    const b = await replica('b');
    const nginx: NginxProcess = await startNginx([a.url, b.url].map((u) => new URL(u).host));
    cleanup.push(() => nginx.stop());
    const adminToken = (await readFile(join(tmp, 'a', 'admin-token'), 'utf8')).trim();
    const viaNginx = { CAIRN_SERVER: nginx.url, CAIRN_TOKEN: adminToken };
    const ok = (r: { code: number; stdout: string; stderr: string }) => {
      assert.equal(r.code, 0, r.stdout + r.stderr);
      return r.stdout.trim();
    };

    // A cache and tokens, made through nginx.
    const publicKey = ok(await cli(['cache', 'create', 'main'], viaNginx));
    const pushToken = ok(
      await cli(['token', 'create', '--scope', 'cache:main:push', '--name', 'main-push'], viaNginx),
    );
    const pullToken = ok(
      await cli(['token', 'create', '--scope', 'cache:main:pull', '--name', 'main-pull'], viaNginx),
    );
    const cacheAt = (url: string): TestCache => ({
      name: 'main',
      url: `${url}/cache/main`,
      publicKey,
      pushToken,
      pullToken,
    });
    const pushNetrc = await writeNetrc(tmp, pushToken, 'push-netrc');
    const pullNetrc = await writeNetrc(tmp, pullToken, 'pull-netrc');
    const tokens = new Map<string, string>();
    for (const name of NAMES) tokens.set(name, ok(await cli(['agent', 'create', name], viaNginx)));

    // Six agents through nginx: round-robin spreads them over both replicas.
    const agents = new Map<string, AgentProcess>();
    for (const name of NAMES) {
      const agent = await startAgent({
        name,
        token: tokens.get(name)!,
        server: nginx.url,
        profile: join(tmp, `profile-${name}`),
      });
      cleanup.push(() => agent.stop());
      await agent.waitFor(/connected to/);
      agents.set(name, agent);
    }
    const [onA, onB] = await until('the replicas to log the six agents', () => {
      const [inA, inB] = [a, b].map((r) => connectedTo(r).map((c) => c.agent));
      return inA!.length + inB!.length === NAMES.length ? [inA!, inB!] : undefined;
    });
    assert.deepEqual([...onA, ...onB].sort(), NAMES);
    assert.ok(onA.length >= 2 && onB.length >= 2, `agents not spread: A ${onA}, B ${onB}`);

    // A closure pushed with the real `nix copy --to` through nginx lands in the bucket.
    // Per agent: its own closures, whose switch writes to its own record file.
    const record = (name: string) => join(tmp, `record-${name}`);
    const built = await buildPackages([
      ...NAMES.flatMap((n) => [
        nixosPackage(`${n}-v1-${RUN_TAG}`, record(n)),
        nixosPackage(`${n}-v2-${RUN_TAG}`, record(n)),
      ]),
      { name: `lb-direct-${RUN_TAG}` },
    ]);
    const v1 = (name: string) => built.get(`${name}-v1-${RUN_TAG}`)!;
    const v2 = (name: string) => built.get(`${name}-v2-${RUN_TAG}`)!;
    const versions = NAMES.flatMap((n) => [v1(n), v2(n)]);
    const direct = built.get(`lb-direct-${RUN_TAG}`)!;
    const nixCopy = async (cacheUrl: string, paths: string[]) => {
      const xdg = await mkdtemp(join(tmpdir(), 'cairn-xdg-'));
      try {
        await run('nix', ['copy', '--to', cacheUrl, ...paths, '--option', 'netrc-file', pushNetrc], {
          env: otherMachineNixEnv(xdg),
        });
      } finally {
        await rm(xdg, { recursive: true, force: true });
      }
    };
    await nixCopy(cacheAt(nginx.url).url, versions);
    for (const path of versions) {
      const narinfo = await fetch(`${nginx.url}/cache/main/${path.slice(11, 43)}.narinfo`, {
        headers: { Authorization: `Bearer ${pullToken}` },
      });
      assert.equal(narinfo.status, 200, path);
      const nar = /^URL: (\S+)$/m.exec(await narinfo.text())![1]!;
      const keys = await s3.objectKeys();
      assert.ok(keys.includes(`caches/1/${nar}`), `${nar} not in the bucket: ${keys.join(' ')}`);
    }
    assert.deepEqual(await s3.incompleteUploads(), []);

    // A closure pushed through replica A directly is substituted by the real Nix through B.
    await nixCopy(cacheAt(a.url).url, [direct]);
    await deleteFromStore([...versions, direct]);
    const xdg = await mkdtemp(join(tmpdir(), 'cairn-xdg-'));
    cleanup.push(() => rm(xdg, { recursive: true, force: true }));
    await run('nix-store', ['--realise', direct, ...substituterArgs(cacheAt(b.url), pullNetrc)], {
      env: otherMachineNixEnv(xdg),
    });
    assert.equal(await readFile(join(direct, 'tag'), 'utf8'), `${RUN_TAG}\n`);

    const activate = async (body: object, ...flags: string[]) => {
      const file = join(tmp, `deploy-${Math.random().toString(36).slice(2)}.json`);
      await writeFile(file, JSON.stringify(body));
      return await cli(['deploy', 'activate', file, ...flags], viaNginx);
    };
    const everyone = (version: (name: string) => string) =>
      Object.fromEntries(NAMES.map((n) => [n, version(n)]));

    // A rollout posted through nginx reaches every agent; following it through nginx sees
    // every result, whichever replica the agent reported it to.
    const first = await activate({ agents: everyone(v1) }, '--timeout', '120s');
    assert.equal(first.code, 0, first.stdout + first.stderr);
    for (const name of NAMES) assert.match(first.stdout, new RegExp(`${name}\\s+succeeded`));
    for (const name of NAMES) assert.equal(await profileTarget(join(tmp, `profile-${name}`)), v1(name), name);

    // A staged rollout, and one replica SIGKILLed once its second batch has opened.
    const started = await activate(
      { agents: everyone(v2), rollout: { batches: ['2', '4', '100%'], bake: '3s' } },
      '--async',
    );
    const id = Number(ok(started));
    // Its event stream through nginx: the first events arrive at once, not when a buffer fills.
    const events = new AbortController();
    const stream = await fetch(`${nginx.url}/api/v1/workspaces/default/rollouts/${id}/events`, {
      headers: { Authorization: `Bearer ${adminToken}` },
      signal: AbortSignal.any([events.signal, AbortSignal.timeout(3000)]),
    });
    assert.equal(stream.status, 200);
    const chunk = await stream.body!.getReader().read();
    assert.match(new TextDecoder().decode(chunk.value), /^event: /m);
    events.abort();
    // Followed through nginx across the kill: a stream on the killed replica is picked up again.
    const following = cli(['deploy', 'follow', String(id), '--timeout', '120s'], viaNginx);
    const api = { url: nginx.url, adminToken };
    const view = async (): Promise<StagedView | undefined> => {
      try {
        return await getRollout(api, id);
      } catch {
        // A request that was on its way to the killed replica.
        return undefined;
      }
    };
    const midway = await until('the second batch to open', async () => {
      const r = await view();
      return r && r.staged.batch >= 1 ? r : undefined;
    });
    // The replica to kill: one holding agents that have yet to switch (mid-way indeed).
    const held = holders([a, b]);
    const unfinished = midway.deployments.filter((d) => d.state !== 'succeeded').map((d) => d.agent);
    const [victim, survivor] = [a, b]
      .map((r) => ({ r, n: unfinished.filter((n) => held.get(n) === r).length }))
      .sort((x, y) => y.n - x.n)
      .map((x) => x.r) as [ServerProcess, ServerProcess];
    const orphans = NAMES.filter((n) => held.get(n) === victim);
    assert.ok(
      orphans.some((n) => unfinished.includes(n)),
      `no unfinished agent on either replica: ${JSON.stringify(midway, null, 1)}`,
    );
    const killedAt = Date.now();
    await victim.kill('SIGKILL');
    // Its agents reconnect through nginx, to the other replica.
    for (const name of orphans) {
      await until(
        () => `${name} to reconnect to the surviving replica:\n${agents.get(name)!.lines.join('\n')}`,
        () => (connectedTo(survivor).some((c) => c.agent === name && c.time > killedAt) ? true : undefined),
      );
    }

    const done = await until(
      `rollout ${id} to finish`,
      async () => {
        const r = await view();
        return r && !['pending', 'running', 'paused'].includes(r.staged.state) ? r : undefined;
      },
      90_000,
    );
    assert.equal(done.staged.state, 'succeeded', JSON.stringify(done, null, 1));
    assert.deepEqual(
      done.deployments.map((d) => [d.agent, d.state]).sort(),
      NAMES.map((n) => [n, 'succeeded']),
    );
    // Nothing ran twice: each agent switched once to v1, then once to v2.
    for (const name of NAMES) {
      assert.equal(await profileTarget(join(tmp, `profile-${name}`)), v2(name), name);
      assert.equal(await readFile(record(name), 'utf8'), `${v1(name)} switch\n${v2(name)} switch\n`, name);
    }
    const followed = await following;
    assert.equal(followed.code, 0, followed.stdout + followed.stderr);
    // Its table: AGENT BATCH "ROLLOUT STATE" STATUS ...
    for (const name of NAMES)
      assert.match(followed.stdout, new RegExp(`^${name} .*succeeded\\s+succeeded`, 'm'), followed.stdout);
    const list = await cli(['deploy', 'list'], viaNginx);
    for (const name of NAMES) assert.match(list.stdout, new RegExp(`${name}\\s.*succeeded`));
  });
});
