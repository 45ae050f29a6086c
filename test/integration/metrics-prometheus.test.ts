import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { type AddressInfo, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { sql } from 'kysely';
import WebSocket from 'ws';
import { AGENT_WS_PATH } from '../../src/protocol/agent-protocol.ts';
import { type AgentProcess, startAgent } from '../helpers/agent-process.ts';
import { type DeployWorld, deployWorld, nixosPackage, writeDeployJson } from '../helpers/deploy-fixtures.ts';
import { RUN_TAG } from '../helpers/nix.ts';
import { cli, startTestServer, type TestServer } from '../helpers/server.ts';
import { freePort } from '../helpers/server-process.ts';

const ALERTS = fileURLToPath(new URL('../../docs/prometheus/cairn-alerts.yml', import.meta.url));
const ALERT_TESTS = fileURLToPath(new URL('../../docs/prometheus/cairn-alerts.test.yml', import.meta.url));

/** Runs a program to its end: exit code and output. */
async function run(cmd: string, args: readonly string[], input?: string) {
  const child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (d: Buffer) => {
    out += d.toString();
  });
  child.stderr.on('data', (d: Buffer) => {
    out += d.toString();
  });
  child.stdin.end(input ?? '');
  const [code] = (await once(child, 'close')) as [number | null];
  return { code, out };
}

/** The value of one sample of a Prometheus text exposition, or undefined when it is absent. */
function sample(text: string, series: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

/** Polls until `check` returns a value other than undefined, or fails after `ms`. */
async function until<T>(what: string, check: () => Promise<T | undefined>, ms = 60_000): Promise<T> {
  const deadline = Date.now() + ms;
  let last: unknown;
  for (;;) {
    try {
      const v = await check();
      if (v !== undefined) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${last ? `: ${last}` : ''}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

describe('/metrics scraped by a real Prometheus', () => {
  let server: TestServer;
  let world: DeployWorld;
  let agent: AgentProcess;
  let prometheus: ChildProcess | undefined;
  let promUrl = '';
  let promDir = '';
  let metricsToken = '';
  let activateToken = '';
  let good = '';
  let bad = '';
  const record = () => join(world.profiles, 'switch-record');
  const scrape = async () => {
    const res = await fetch(server.metricsUrl!);
    assert.equal(res.status, 200);
    return await res.text();
  };

  before(async () => {
    server = await startTestServer({ metricsListen: '127.0.0.1:0', metricsPerAgent: true });
    world = await deployWorld(server);
    const token = await cli(['token', 'create', '--name', 'prometheus', '--scope', 'metrics'], world.env);
    assert.equal(token.code, 0, token.stderr);
    metricsToken = token.stdout.trim();
    activateToken = (await cli(['token', 'create', '--scope', 'activate'], world.env)).stdout.trim();
    const paths = await world.publish([
      nixosPackage(`metrics-good-${RUN_TAG}`, record()),
      nixosPackage(`metrics-bad-${RUN_TAG}`, record(), { exit: 1 }),
    ]);
    good = paths.get(`metrics-good-${RUN_TAG}`)!;
    bad = paths.get(`metrics-bad-${RUN_TAG}`)!;
    agent = await startAgent({
      name: 'm1',
      token: await world.createAgent('m1'),
      profile: join(world.profiles, 'm1'),
      server: server.url,
    });
    await agent.waitFor(/connected to/);

    // Prometheus itself (Debian's), on a port of its own, scraping the server twice: the
    // metrics listener without a token, and the main address with the metrics token, as
    // docs/observability.md configures it.
    promDir = await mkdtemp(join(tmpdir(), 'cairn-prometheus-'));
    await writeFile(join(promDir, 'token'), metricsToken);
    const main = new URL(server.url);
    const listener = new URL(server.metricsUrl!);
    await writeFile(
      join(promDir, 'prometheus.yml'),
      [
        'global:',
        '  scrape_interval: 1s',
        'scrape_configs:',
        '  - job_name: cairn-listener',
        '    static_configs:',
        `      - targets: ['${listener.host}']`,
        '  - job_name: cairn-token',
        '    authorization:',
        `      credentials_file: ${join(promDir, 'token')}`,
        '    static_configs:',
        `      - targets: ['${main.host}']`,
        '',
      ].join('\n'),
    );
    const port = await freePort();
    promUrl = `http://127.0.0.1:${port}`;
    prometheus = spawn(
      'prometheus',
      [
        `--config.file=${join(promDir, 'prometheus.yml')}`,
        `--storage.tsdb.path=${join(promDir, 'data')}`,
        `--web.listen-address=127.0.0.1:${port}`,
        '--log.level=warn',
      ],
      { stdio: 'ignore' },
    );
    await until('Prometheus to be ready', async () =>
      (await fetch(`${promUrl}/-/ready`)).ok ? true : undefined,
    );
  });

  after(async () => {
    if (prometheus && prometheus.exitCode === null) {
      const exited = once(prometheus, 'exit');
      prometheus.kill('SIGTERM');
      await exited;
    }
    await agent?.stop();
    await server?.stop();
    if (promDir) await rm(promDir, { recursive: true, force: true });
  });

  /** Asks Prometheus's HTTP API; the result vector. */
  const query = async (q: string) => {
    const res = await fetch(`${promUrl}/api/v1/query?query=${encodeURIComponent(q)}`);
    const body = (await res.json()) as {
      status: string;
      data: { result: Array<{ metric: Record<string, string>; value: [number, string] }> };
    };
    assert.equal(body.status, 'success');
    return body.data.result;
  };

  it('Prometheus scrapes both addresses and its API returns cairn_deployments_total after a real deployment', async () => {
    const deployed = await cli(
      ['deploy', 'activate', await writeDeployJson(world.profiles, { agents: { m1: good } })],
      world.env,
    );
    assert.equal(deployed.code, 0, deployed.stdout + deployed.stderr);
    for (const job of ['cairn-listener', 'cairn-token']) {
      const got = await until(`cairn_deployments_total from ${job}`, async () => {
        const r = await query(`cairn_deployments_total{job="${job}",state="succeeded"}`);
        return r.length === 1 && r[0]!.value[1] === '1' ? r : undefined;
      });
      assert.equal(got[0]!.metric.job, job);
      const up = await query(`up{job="${job}"}`);
      assert.equal(up[0]?.value[1], '1', `${job} is up`);
    }
    const agents = await query('cairn_agents{job="cairn-listener",state="online"}');
    assert.equal(agents[0]?.value[1], '1');
    // The duration of the one deployment the agent ran is in the histogram.
    const durations = await query(
      'cairn_deployment_duration_seconds_count{job="cairn-listener",state="succeeded"}',
    );
    assert.equal(durations[0]?.value[1], '1');
  });

  it('counts a deployment the agent rolled back, with the step that failed, and shows it per agent', async () => {
    const r = await cli(
      ['deploy', 'activate', await writeDeployJson(world.profiles, { agents: { m1: bad } })],
      world.env,
    );
    assert.equal(r.code, 1, r.stdout + r.stderr);
    assert.match(r.stdout, /m1\s+rolled-back/);
    const text = await scrape();
    assert.equal(sample(text, 'cairn_deployments_total{state="rolled-back"}'), 1);
    assert.equal(sample(text, 'cairn_deployments_total{state="succeeded"}'), 1);
    assert.equal(sample(text, 'cairn_rollbacks_total{reason="activate"}'), 1);
    assert.equal(sample(text, 'cairn_rollbacks_total{reason="requested"}'), 0);
    // Per agent (--metrics-per-agent): what it reported, connected, its newest deployment's state.
    assert.match(
      text,
      /^cairn_agent_info\{agent="m1",kind="nixos",system="[a-z0-9_]+-linux",version="[^"]+"\} 1$/m,
    );
    assert.equal(sample(text, 'cairn_agent_connected{agent="m1"}'), 1);
    assert.equal(sample(text, 'cairn_agent_deployment_state{agent="m1",state="rolled-back"}'), 1);
    assert.equal(sample(text, 'cairn_agent_deployment_state{agent="m1",state="succeeded"}'), undefined);
    assert.equal(sample(text, 'cairn_agent_reboot_required{agent="m1"}'), 0);
    // And a rollback asked for by a person, to the deployment that succeeded.
    const [first] = await server.query<{ id: number }>(
      sql`select id from deployments where state = 'succeeded' order by id limit 1`,
    );
    const back = await cli(['deploy', 'rollback', 'm1', '--to', String(first!.id)], world.env);
    assert.equal(back.code, 0, back.stdout + back.stderr);
    assert.equal(sample(await scrape(), 'cairn_rollbacks_total{reason="requested"}'), 1);
  });

  it('counts cache requests and bytes by kind and status, and uploads that fail verification', async () => {
    const before = await scrape();
    const base = `${server.url}/cache/main`;
    const headers = { Authorization: `Bearer ${server.adminToken}` };
    assert.equal((await fetch(`${base}/${'0'.repeat(32)}.narinfo`, { headers })).status, 404);
    const info = await fetch(`${base}/nix-cache-info`, { headers });
    const infoBody = await info.text();
    // A NAR whose content does not hash to its name.
    const mismatch = await fetch(`${base}/nar/${'1'.repeat(52)}.nar`, {
      method: 'PUT',
      headers,
      body: 'not a nar',
    });
    assert.equal(mismatch.status >= 400, true);
    const text = await scrape();
    const delta = (series: string) => (sample(text, series) ?? 0) - (sample(before, series) ?? 0);
    assert.equal(delta('cairn_cache_requests_total{kind="narinfo",method="GET",code="404"}'), 1);
    assert.equal(delta('cairn_cache_requests_total{kind="nix-cache-info",method="GET",code="200"}'), 1);
    // The answer's body and its headers.
    assert.ok(delta('cairn_cache_sent_bytes_total{kind="nix-cache-info",code="200"}') > infoBody.length);
    const failures = text
      .split('\n')
      .filter((l) => l.startsWith('cairn_cache_upload_verification_failures_total{'));
    assert.equal(failures.length, 1, failures.join('\n'));
    assert.match(failures[0]!, /kind="nar",reason="(invalid_nar|upload_mismatch)"\} 1$/);
    // The agent downloaded the closures it deployed through the cache: counted too.
    assert.ok((sample(text, 'cairn_cache_requests_total{kind="nar",method="GET",code="200"}') ?? 0) >= 1);
  });

  it('counts agent connections and refusals', async () => {
    const before = await scrape();
    const ws = new WebSocket(`${server.url.replace('http', 'ws')}${AGENT_WS_PATH}`, {
      headers: { Authorization: `Bearer cairn_${'A'.repeat(43)}` },
    });
    const status = await new Promise<number>((resolve) => {
      ws.on('unexpected-response', (_req, res) => resolve(res.statusCode ?? 0));
      ws.on('error', () => {});
    });
    assert.equal(status, 401);
    const text = await scrape();
    const series = 'cairn_agent_connections_refused_total{reason="unauthenticated"}';
    assert.equal((sample(text, series) ?? 0) - (sample(before, series) ?? 0), 1);
    assert.ok((sample(text, 'cairn_agent_connections_total') ?? 0) >= 1);
    assert.equal(sample(text, 'cairn_agent_connections_open'), 1);
  });

  it('passes promtool check metrics, per-agent series and all', async () => {
    const text = await scrape();
    assert.match(text, /^cairn_agent_info\{/m);
    const r = await run('promtool', ['check', 'metrics'], text);
    assert.equal(r.code, 0, r.out);
    assert.equal(r.out.trim(), '');
  });

  it('refuses /metrics on the main address without a token, with a wrong token and with a token lacking the scope', async () => {
    const get = (token?: string) =>
      fetch(
        `${server.url}/metrics`,
        token === undefined ? {} : { headers: { Authorization: `Bearer ${token}` } },
      );
    const none = await get();
    assert.equal(none.status, 401);
    assert.equal(((await none.json()) as { code: string }).code, 'UNAUTHENTICATED');
    const wrong = await get(`cairn_${'B'.repeat(43)}`);
    assert.equal(wrong.status, 401);
    assert.equal(((await wrong.json()) as { code: string }).code, 'UNAUTHENTICATED');
    const activate = await get(activateToken);
    assert.equal(activate.status, 403);
    assert.equal(((await activate.json()) as { code: string }).code, 'FORBIDDEN');
    const ok = await get(metricsToken);
    assert.equal(ok.status, 200);
    assert.match(ok.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/);
    assert.equal((await get(server.adminToken)).status, 200);
    // The metrics scope reads metrics and nothing else.
    const agents = await fetch(`${server.url}/api/v1/workspaces/default/agents`, {
      headers: { Authorization: `Bearer ${metricsToken}` },
    });
    assert.equal(agents.status, 403);
  });

  it('serves only GET /metrics on the metrics address', async () => {
    const origin = new URL(server.metricsUrl!).origin;
    const other = await fetch(`${origin}/api/v1/workspaces/default/agents`);
    assert.equal(other.status, 404);
    assert.equal(((await other.json()) as { code: string }).code, 'NOT_FOUND');
    const post = await fetch(`${origin}/metrics`, { method: 'POST', body: '' });
    assert.equal(post.status, 405);
  });

  it('documents a scrape configuration that promtool check config accepts, with the alert rules', async () => {
    const doc = await readFile(
      fileURLToPath(new URL('../../docs/observability.md', import.meta.url)),
      'utf8',
    );
    const yaml = /```yaml\n(# prometheus\.yml\n[\s\S]*?)```/.exec(doc)?.[1];
    assert.ok(yaml, 'docs/observability.md has no prometheus.yml example');
    // Its paths, pointed at files that exist here: the token file and the repository's rules.
    const config = yaml
      .replace('/etc/prometheus/cairn-token', join(promDir, 'token'))
      .replace('/etc/prometheus/cairn-alerts.yml', ALERTS);
    assert.notEqual(config, yaml);
    const file = join(promDir, 'documented.yml');
    await writeFile(file, config);
    const r = await run('promtool', ['check', 'config', file]);
    assert.equal(r.code, 0, r.out);
    assert.match(r.out, /SUCCESS: 3 rules found/);
  });

  it('has alert rules that pass promtool check rules and promtool test rules', async () => {
    const check = await run('promtool', ['check', 'rules', ALERTS]);
    assert.equal(check.code, 0, check.out);
    assert.match(check.out, /SUCCESS: 3 rules found/);
    const test = await run('promtool', ['test', 'rules', ALERT_TESTS]);
    assert.equal(test.code, 0, test.out);
    assert.match(test.out, /SUCCESS/);
  });
});

describe('/metrics without per-agent series', () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer();
    const env = { CAIRN_SERVER: server.url, CAIRN_TOKEN: server.adminToken };
    for (const args of [
      ['agent', 'create', 'quiet'],
      ['agent', 'create', 'retired'],
      ['agent', 'revoke', 'retired'],
    ]) {
      const r = await cli(args, env);
      assert.equal(r.code, 0, r.stderr);
    }
  });
  after(() => server.stop());

  it('has the fleet series but no series per agent by default, and no metrics address', async () => {
    assert.equal(server.metricsUrl, undefined);
    const res = await fetch(`${server.url}/metrics`, {
      headers: { Authorization: `Bearer ${server.adminToken}` },
    });
    const text = await res.text();
    // A revoked agent is retired, not offline: it does not count towards the offline alert.
    assert.equal(sample(text, 'cairn_agents{state="offline"}'), 1);
    assert.equal(sample(text, 'cairn_agents{state="revoked"}'), 1);
    assert.equal(sample(text, 'cairn_agents{state="online"}'), 0);
    assert.doesNotMatch(text, /^cairn_agent_(info|connected|deployment_state|reboot_required)\{/m);
    assert.doesNotMatch(text, /quiet/);
  });

  it('refuses to start when the metrics address is taken, naming it', async () => {
    const taken = createServer();
    await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve));
    const { port } = taken.address() as AddressInfo;
    try {
      await assert.rejects(
        startTestServer({ metricsListen: `127.0.0.1:${port}` }),
        new RegExp(
          `^Error: Cannot listen for metrics on 127\\.0\\.0\\.1:${port} \\(--metrics-listen\\): .*EADDRINUSE`,
        ),
      );
    } finally {
      taken.close();
    }
  });
});
