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

/** The value of one sample of a Prometheus text exposition, or undefined when it is absent. */
function sample(text: string, series: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

describe('metrics of two replicas on one PostgreSQL database', {
  skip: !testPostgresUrl() && 'CAIRN_TEST_DATABASE_URL unset',
}, () => {
  const cleanup: Array<() => Promise<unknown>> = [];
  after(async () => {
    for (const c of cleanup.reverse()) await c().catch(() => {});
  });

  it('count a deployment on the replica that recorded it, and show the same fleet on both', async () => {
    const tmp = await mkdtemp(join(tmpdir(), 'cairn-replicas-metrics-'));
    cleanup.push(() => rm(tmp, { recursive: true, force: true }));
    const db = await createTestDatabase();
    cleanup.push(() => db.drop());
    const database = (db.config as { url: string }).url;
    const metricsPorts = [await freePort(), await freePort()];
    // One after the other: the first creates the workspace and the admin token.
    const a = await spawnServer({
      port: await freePort(),
      dataDir: join(tmp, 'a'),
      database,
      args: ['--metrics-listen', `127.0.0.1:${metricsPorts[0]}`],
    });
    cleanup.push(() => a.kill('SIGKILL'));
    const b = await spawnServer({
      port: await freePort(),
      dataDir: join(tmp, 'b'),
      database,
      args: ['--metrics-listen', `127.0.0.1:${metricsPorts[1]}`],
    });
    cleanup.push(() => b.kill('SIGKILL'));
    const scrape = async (i: number) => (await fetch(`http://127.0.0.1:${metricsPorts[i]}/metrics`)).text();

    const token = (await readFile(join(tmp, 'a', 'admin-token'), 'utf8')).trim();
    const viaA = { CAIRN_SERVER: a.url, CAIRN_TOKEN: token };
    const viaB = { CAIRN_SERVER: b.url, CAIRN_TOKEN: token };
    assert.equal((await cli(['cache', 'create', 'main'], viaA)).code, 0);
    await cli(['agent', 'create', 'idle'], viaA);
    const agentToken = (await cli(['agent', 'create', 'rm'], viaA)).stdout.trim();
    const name = `replicas-metrics-${RUN_TAG}`;
    const paths = await buildPackages([plainPackage(name)]);
    const path = paths.get(name)!;
    // Pushed through B, which the agent downloads from (each replica keeps its own blobs here).
    const pushed = await cli(['push', 'main', path], viaB);
    assert.equal(pushed.code, 0, pushed.stderr);
    await deleteFromStore([path]);
    const agent = await startAgent({
      name: 'rm',
      token: agentToken,
      server: b.url,
      profile: join(tmp, 'profile'),
    });
    cleanup.push(() => agent.stop());
    await agent.waitFor(/connected to/);

    // Posted to A; the agent on B runs it and B records the result.
    const file = join(tmp, 'deploy.json');
    await writeFile(file, JSON.stringify({ agents: { rm: path } }));
    const r = await cli(['deploy', 'activate', file, '--timeout', '60s'], viaA);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.equal(await profileTarget(join(tmp, 'profile')), path);

    const [onA, onB] = [await scrape(0), await scrape(1)];
    // Counters: what each replica did; Prometheus sums them to the fleet's 1.
    assert.equal(sample(onA, 'cairn_deployments_total{state="succeeded"}'), 0);
    assert.equal(sample(onB, 'cairn_deployments_total{state="succeeded"}'), 1);
    assert.equal(sample(onB, 'cairn_deployment_duration_seconds_count{state="succeeded"}'), 1);
    assert.equal(sample(onA, 'cairn_agent_connections_open'), 0);
    assert.equal(sample(onB, 'cairn_agent_connections_open'), 1);
    // Gauges from the database: the whole fleet, the same on both.
    for (const text of [onA, onB]) {
      assert.equal(sample(text, 'cairn_agents{state="online"}'), 1);
      assert.equal(sample(text, 'cairn_agents{state="offline"}'), 1);
    }
  });
});
