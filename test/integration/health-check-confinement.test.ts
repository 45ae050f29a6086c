import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { runHealthChecks } from '../../src/agent/health-checks.ts';
import { healthCheckSchema } from '../../src/protocol/health-check.ts';
import { writeDeployJson, writeScript } from '../helpers/deploy-fixtures.ts';
import { useDeployTestbed } from '../helpers/deploy-testbed.ts';
import { buildPackages, RUN_TAG } from '../helpers/nix.ts';
import { cli } from '../helpers/server.ts';

/**
 * Issue #23, finding 1: an `activate` token must not be able to run an arbitrary command as root
 * through a health check. Commands outside the deployed closure are refused when the rollout is
 * submitted (CLI exit 2, API 400) and again by the agent before anything runs; the rollout's
 * audit entry shows the checks and the rollback script.
 */
describe('health check commands are confined to the deployed closure', () => {
  const bed = useDeployTestbed();
  let marker: string;
  let activateEnv: Record<string, string>;
  let deployed: string;
  let stranger: string;
  before(async () => {
    marker = join(await mkdtemp(join(tmpdir(), 'cairn-hc-attack-')), 'pwned');
    const token = await cli(['token', 'create', '--scope', 'activate', '--name', 'ci'], bed.world.env);
    assert.equal(token.code, 0, token.stderr);
    activateEnv = { CAIRN_SERVER: bed.server.url, CAIRN_TOKEN: token.stdout.trim() };
    // A closure with a legitimate check, a link out of the store (bin/escape -> /bin/sh) and a
    // relative link climbing out of it; and a store path that is not part of that closure.
    const paths = await buildPackages([
      {
        name: `hc-confined-${RUN_TAG}`,
        script: [
          writeScript('bin/check', 'echo healthy "$@"'),
          'ln -s /bin/sh $out/bin/escape',
          'ln -s ../../../../bin/sh $out/bin/climb',
          'echo not a program > $out/readme',
        ].join('\n'),
      },
      { name: `hc-stranger-${RUN_TAG}`, script: writeScript('bin/sh', 'exec /bin/sh "$@"') },
    ]);
    deployed = paths.get(`hc-confined-${RUN_TAG}`)!;
    stranger = paths.get(`hc-stranger-${RUN_TAG}`)!;
  });
  after(async () => {
    await rm(join(marker, '..'), { recursive: true, force: true });
  });

  const hostile = () => [
    ['/bin/sh', '-c', `touch ${marker}`],
    ['../../../../bin/sh', '-c', `touch ${marker}`],
    ['bin/../../../../bin/sh', '-c', `touch ${marker}`],
    [`${deployed}/../../../bin/sh`, '-c', `touch ${marker}`],
  ];

  it('refuses an absolute or climbing program at submission: CLI exit 2, API 400, nothing created', async () => {
    const paths = await bed.world.publish([
      { name: `hc-target-${RUN_TAG}`, script: writeScript('bin/check', 'echo ok') },
    ]);
    const target = paths.get(`hc-target-${RUN_TAG}`)!;
    await bed.world.createAgent('hc-victim');
    for (const command of hostile()) {
      const body = { agents: { 'hc-victim': target }, healthChecks: { '*': [{ command }] } };
      const r = await cli(['deploy', 'activate', await writeFile(body)], activateEnv);
      assert.equal(r.code, 2, `${command[0]}: ${r.stdout}${r.stderr}`);
      assert.match(r.stderr, /healthChecks\.\*\.0\.command\.0: the program /, command[0]);

      const res = await fetch(`${bed.server.url}/api/v1/workspaces/default/rollouts`, {
        method: 'POST',
        headers: { Authorization: `Bearer ${activateEnv.CAIRN_TOKEN}`, 'Content-Type': 'application/json' },
        body: JSON.stringify(body),
      });
      assert.equal(res.status, 400, command[0]);
      const error = (await res.json()) as { code: string; validations?: Array<{ field: string }> };
      assert.equal(error.code, 'INVALID_ARGUMENT');
    }
    const list = await cli(['deploy', 'list', '--json'], bed.world.env);
    assert.equal(list.code, 0, list.stderr);
    assert.ok(!list.stdout.includes('hc-victim'), `a deployment was created: ${list.stdout}`);
  });

  it('records the health checks and the rollback script in the rollout audit entry', async () => {
    const paths = await bed.world.publish([
      { name: `hc-audited-${RUN_TAG}`, script: writeScript('bin/check', 'echo ok') },
      { name: `hc-rollback-${RUN_TAG}`, script: writeScript('bin/rb', 'echo ok') },
    ]);
    const target = paths.get(`hc-audited-${RUN_TAG}`)!;
    const script = paths.get(`hc-rollback-${RUN_TAG}`)!;
    await bed.world.createAgent('hc-audited');
    const checks = [{ command: ['bin/check', '--deep'] }, { http: 'http://127.0.0.1:9/healthz' }];
    const r = await cli(
      [
        'deploy',
        'activate',
        '--async',
        await writeFile({
          agents: { 'hc-audited': target },
          rollbackScript: { 'x86_64-linux': script },
          healthChecks: { 'hc-audited': checks },
        }),
      ],
      activateEnv,
    );
    assert.equal(r.code, 0, r.stderr);
    const res = await fetch(`${bed.server.url}/api/v1/workspaces/default/audit`, {
      headers: { Authorization: `Bearer ${bed.server.adminToken}` },
    });
    const { entries } = (await res.json()) as {
      entries: Array<{ action: string; detail: Record<string, unknown> | null }>;
    };
    const entry = entries.find(
      (e) => e.action === 'rollout.create' && JSON.stringify(e.detail).includes('hc-audited'),
    );
    assert.ok(entry, JSON.stringify(entries));
    assert.deepEqual(entry.detail?.rollbackScript, { 'x86_64-linux': script });
    const audited = entry.detail?.healthChecks as Record<string, Array<Record<string, unknown>>>;
    const recorded = audited['hc-audited']!;
    assert.deepEqual(
      recorded.map((c) => c.command ?? c.http),
      [['bin/check', '--deep'], 'http://127.0.0.1:9/healthz'],
    );
  });

  // The agent's own check, fed what a hostile or older server could send: the function the agent
  // runs on the real store paths built above, with the real nix-store for the closure.
  const agentRuns = async (command: string[]) => {
    const lines: string[] = [];
    // Built as it arrives, not parsed: the wire schema would already refuse some of these.
    const check = { command, timeoutSeconds: 10, retries: 0, intervalSeconds: 0, graceSeconds: 0 };
    const outcome = await runHealthChecks([check], deployed, {
      env: process.env,
      onLine: (l) => lines.push(l),
    });
    return { outcome, lines };
  };

  it('on the agent, refuses programs outside the closure, through links too, and runs nothing', async () => {
    for (const command of [
      ...hostile(),
      ['bin/escape', '-c', `touch ${marker}`],
      ['bin/climb', '-c', `touch ${marker}`],
      [`${stranger}/bin/sh`, '-c', `touch ${marker}`],
      ['readme'],
    ]) {
      const { outcome, lines } = await agentRuns(command);
      assert.equal(outcome.ok, false, command[0]);
      assert.match(outcome.ok ? '' : outcome.reason, /refused to run it/, command[0]);
      assert.ok(!lines.some((l) => l.includes('attempt')), `${command[0]} was attempted: ${lines}`);
      assert.equal(existsSync(marker), false, `${command[0]} ran`);
    }
  });

  it('on the agent, runs a program of the closure, by relative or absolute path', async () => {
    for (const command of [
      ['bin/check', 'x'],
      [`${deployed}/bin/check`, 'y'],
    ]) {
      const { outcome, lines } = await agentRuns(command);
      assert.deepEqual(outcome, { ok: true }, lines.join('\n'));
      assert.ok(lines.includes(`healthy ${command[1]}`), lines.join('\n'));
    }
  });

  it('reads a bounded excerpt of an HTTP answer and, under loopback, refuses other hosts', async () => {
    const http = createServer((_req, res) => {
      res.writeHead(500);
      // 64 MiB of one line: the agent must not read it all, nor log it.
      const chunk = Buffer.alloc(1024 * 1024, 'x');
      let sent = 0;
      const more = () => {
        while (sent < 64) {
          sent++;
          if (!res.write(chunk)) return void res.once('drain', more);
        }
        res.end();
      };
      res.on('error', () => {});
      more();
    });
    http.listen(0, '127.0.0.1');
    await new Promise((r) => http.once('listening', r));
    try {
      const port = (http.address() as AddressInfo).port;
      const lines: string[] = [];
      const check = healthCheckSchema.options[1].parse({ http: `http://127.0.0.1:${port}/`, retries: 0 });
      const outcome = await runHealthChecks([check], deployed, {
        env: process.env,
        onLine: (l) => lines.push(l),
        http: 'loopback',
      });
      assert.equal(outcome.ok, false);
      assert.match(outcome.ok ? '' : outcome.reason, /answered 500: x{10}/);
      assert.ok(
        !outcome.ok && outcome.reason.length < 600,
        `reason of ${outcome.ok || outcome.reason.length}`,
      );
      assert.ok(
        lines.every((l) => l.length < 600),
        `a log line of ${Math.max(...lines.map((l) => l.length))} characters`,
      );

      const away = healthCheckSchema.options[1].parse({ http: 'http://192.0.2.1/', retries: 0 });
      const refused = await runHealthChecks([away], deployed, {
        env: process.env,
        onLine: (l) => lines.push(l),
        http: 'loopback',
      });
      assert.match(refused.ok ? '' : refused.reason, /only on loopback \(CAIRN_AGENT_HEALTH_HTTP=loopback\)/);
    } finally {
      http.closeAllConnections();
      http.close();
    }
  });

  const writeFile = (body: object) => writeDeployJson(bed.world.profiles, body);
});
