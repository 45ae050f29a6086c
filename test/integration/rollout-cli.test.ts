import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { bearer, createTestCache, narinfoText, rawRequest, syntheticPath } from '../helpers/binary-cache.ts';
import { adminApi, cli, startTestServer, type TestServer } from '../helpers/server.ts';

/**
 * The staged-rollout CLI against a real server, with agents created but never started (what is
 * checked needs no machine): `deploy activate --rollout` validation, the operations, `status`,
 * `follow` and the exit code 3 at `--timeout`.
 */
describe('cairn deploy activate --rollout, pause|resume|promote|abort|status|follow', () => {
  let server: TestServer;
  let env: Record<string, string>;
  let dir: string;
  let path: string;

  before(async () => {
    server = await startTestServer();
    env = { CAIRN_SERVER: server.url, CAIRN_TOKEN: server.adminToken };
    dir = await mkdtemp(join(tmpdir(), 'cairn-rollout-cli-'));
    const cache = await createTestCache(server, 'main');
    const p = syntheticPath('system', 'a system');
    const push = bearer(cache.pushToken);
    const nar = await rawRequest(`${cache.url}/nar/${p.narFile}`, {
      method: 'PUT',
      headers: push,
      body: p.nar,
    });
    assert.equal(nar.status, 201);
    const info = await rawRequest(`${cache.url}/${p.hashPart}.narinfo`, {
      method: 'PUT',
      headers: push,
      body: narinfoText(p.fields),
    });
    assert.equal(info.status, 201, info.body);
    path = p.storePath;
    for (const n of ['a1', 'a2', 'a3', 'b1', 'b2', 'g1', 'g2', 'n1', 'o1']) {
      const r = await cli(['agent', 'create', n], env);
      assert.equal(r.code, 0, r.stderr);
    }
    assert.equal((await cli(['agent', 'tag', 'a1', 'canary'], env)).code, 0);
  });
  after(async () => {
    await server.stop();
    await rm(dir, { recursive: true, force: true });
  });

  let files = 0;
  const write = async (body: unknown, raw?: string) => {
    const file = join(dir, `f${++files}.json`);
    await writeFile(file, raw ?? JSON.stringify(body));
    return file;
  };
  const deployJson = (names: readonly string[], rollout?: unknown) =>
    write({ agents: Object.fromEntries(names.map((n) => [n, path])), ...(rollout ? { rollout } : {}) });
  const deploymentCount = async () =>
    ((await adminApi(server, 'GET', '/deployments?limit=1000')) as { deployments: unknown[] }).deployments
      .length;
  /** Creates a rollout with --async and returns its id. */
  const created = async (names: readonly string[], rollout?: unknown) => {
    const r = await cli(['deploy', 'activate', '--async', await deployJson(names, rollout)], env);
    assert.equal(r.code, 0, r.stderr);
    return Number(r.stdout.trim());
  };

  it('refuses malformed policies with exit 2, naming the field, in deploy.json or --rollout, creating nothing', async () => {
    const cases: Array<[string, unknown, RegExp]> = [
      [
        'batches not ending at 100%',
        { batches: ['50%', '90%'] },
        /rollout\.batches\.1: the last batch must be "100%"/,
      ],
      ['falling batches', { batches: ['50%', '20%', '100%'] }, /rollout\.batches\.1: batches are cumulative/],
      [
        'unknown tag in canary',
        { canary: ['tag:nosuch'] },
        /rollout\.canary\.0: no agent of this deployment has the tag 'nosuch'/,
      ],
      [
        'unknown agent in canary',
        { canary: ['ghost'] },
        /rollout\.canary\.0: 'ghost' is not an agent of this deployment/,
      ],
      ['negative duration', { bake: '-1m' }, /rollout\.bake: bake must be a duration such as 0, 30s/],
      [
        'threshold over 100%',
        { failureThreshold: { max: '150%' } },
        /rollout\.failureThreshold\.max: must be a share over 0% and at most 100% \(got '150%'\)/,
      ],
      ['unknown key', { batchs: ['100%'] }, /rollout: .*"batchs"/],
    ];
    const before = await deploymentCount();
    for (const [what, policy, field] of cases) {
      const inline = await cli(['deploy', 'activate', await deployJson(['a1', 'a2'], policy)], env);
      assert.equal(inline.code, 2, `${what} (deploy.json): ${inline.stdout}${inline.stderr}`);
      assert.match(inline.stderr, field, what);
      const separate = await cli(
        ['deploy', 'activate', await deployJson(['a1', 'a2']), '--rollout', await write(policy)],
        env,
      );
      assert.equal(separate.code, 2, `${what} (--rollout): ${separate.stdout}${separate.stderr}`);
      assert.match(separate.stderr, field, what);
    }
    assert.equal(await deploymentCount(), before, 'a refused policy created deployments');
  });

  it('refuses --rollout with a deploy.json that has a rollout key, and a policy file it cannot read, with exit 2', async () => {
    const before = await deploymentCount();
    const file = await deployJson(['a1'], { batches: ['100%'] });
    const policy = await write({ batches: ['100%'] });
    const both = await cli(['deploy', 'activate', file, '--rollout', policy], env);
    assert.equal(both.code, 2, both.stderr);
    assert.ok(
      both.stderr.includes(`Cannot use --rollout ${policy}: ${file} has a rollout key of its own`),
      both.stderr,
    );

    const missing = await cli(
      ['deploy', 'activate', await deployJson(['a1']), '--rollout', join(dir, 'nope.json')],
      env,
    );
    assert.equal(missing.code, 2, missing.stderr);
    assert.match(missing.stderr, /Cannot read .*nope\.json: ENOENT/);
    const notJson = await cli(
      ['deploy', 'activate', await deployJson(['a1']), '--rollout', await write(null, '{batches:')],
      env,
    );
    assert.equal(notJson.code, 2, notJson.stderr);
    assert.match(notJson.stderr, /Cannot parse .*\.json: not valid JSON/);
    const notObject = await cli(
      ['deploy', 'activate', await deployJson(['a1']), '--rollout', await write(['100%'])],
      env,
    );
    assert.equal(notObject.code, 2, notObject.stderr);
    assert.match(notObject.stderr, /rollout: /);
    assert.equal(await deploymentCount(), before);
  });

  it('refuses an id that is not a positive whole number with exit 2, and an unknown rollout with its message', async () => {
    for (const bad of ['0', 'abc', '1.5', '12x']) {
      for (const cmd of ['pause', 'resume', 'promote', 'abort', 'status', 'follow']) {
        const r = await cli(['deploy', cmd, bad], env);
        assert.equal(r.code, 2, `${cmd} ${bad}: ${r.stderr}`);
        assert.match(r.stderr, /Cannot use ROLLOUT: expected a rollout id, a positive whole number/);
      }
    }
    const unknown = await cli(['deploy', 'pause', '99999'], env);
    assert.equal(unknown.code, 1, unknown.stderr);
    assert.match(unknown.stderr, /Cannot find rollout '99999'/);
  });

  it('refuses the operations on a rollout that is not staged (CONFLICT, exit 1); status shows its deployments', async () => {
    const id = await created(['n1']);
    for (const cmd of ['pause', 'resume', 'promote', 'abort']) {
      const r = await cli(['deploy', cmd, String(id)], env);
      assert.equal(r.code, 1, `${cmd}: ${r.stderr}`);
      assert.ok(
        r.stderr.includes(`Cannot ${cmd} rollout ${id}: it is not staged (it deployed at once)`),
        r.stderr,
      );
    }
    const s = await cli(['deploy', 'status', String(id)], env);
    assert.equal(s.code, 0, s.stderr);
    assert.match(s.stdout, /not staged/);
    assert.match(s.stdout, /n1\s+pending/);
  });

  it('pause, resume, promote and abort a running rollout; a state that forbids one is a CONFLICT with its message', async () => {
    // Offline agents with `offline: wait` are dispatched anyway and hold their batch: it runs.
    const id = await created(['b1', 'b2'], { batches: ['50%', '100%'], offline: 'wait' });
    const op = (...args: string[]) => cli(['deploy', ...args, String(id)], env);
    const resume = await op('resume');
    assert.equal(resume.code, 1, resume.stderr);
    assert.ok(resume.stderr.includes(`Cannot resume rollout ${id}: it is running already`), resume.stderr);

    const pause = await op('pause');
    assert.equal(pause.code, 0, pause.stderr);
    assert.match(
      pause.stdout,
      new RegExp(`^rollout ${id}: paused \\(paused by admin\\)\\nwaiting: paused: `),
    );
    const status = await op('status');
    assert.equal(status.code, 0, status.stderr);
    assert.match(status.stdout, /^State:\s+paused$/m);
    assert.match(status.stdout, /^Waiting:\s+paused: nothing is dispatched/m);
    assert.match(
      status.stdout,
      /^Threshold:\s+0 failed of 0 decided \(trips at 10% failed once 5 are decided\)$/m,
    );
    assert.match(status.stdout, /^1\/2\s+50%\s+auto\s+1\s+open/m);
    assert.match(status.stdout, /^2\/2\s+100%\s+auto\s+1\s+waiting/m);
    assert.match(status.stdout, /AGENT\s+BATCH\s+ROLLOUT STATE\s+STATUS/);
    const json = JSON.parse((await op('status', '--json')).stdout) as {
      staged: { state: string; batches: unknown[] };
      deployments: Array<{ rolloutState: string }>;
    };
    assert.equal(json.staged.state, 'paused');
    assert.equal(json.staged.batches.length, 2);
    const promotePaused = await op('promote');
    assert.equal(promotePaused.code, 1);
    assert.match(promotePaused.stderr, /Cannot promote rollout \d+: it is paused: resume it first/);

    const resumed = await op('resume');
    assert.equal(resumed.code, 0, resumed.stderr);
    assert.match(resumed.stdout, new RegExp(`^rollout ${id}: running\\n`));
    const promoted = await op('promote', '--full');
    assert.equal(promoted.code, 0, promoted.stderr);
    assert.match(promoted.stdout, /waiting: batch 2 of 2 \(100%\)/);
    const again = await op('promote');
    assert.equal(again.code, 1);
    assert.match(again.stderr, /it is running with its last batch open/);

    const aborted = await op('abort');
    assert.equal(aborted.code, 0, aborted.stderr);
    assert.match(aborted.stdout, new RegExp(`^rollout ${id}: aborted \\(aborted by admin\\)\\n$`));
    assert.match((await op('status')).stdout, /^State:\s+aborted$/m);
    const abortAgain = await op('abort');
    assert.equal(abortAgain.code, 1);
    assert.match(abortAgain.stderr, new RegExp(`Cannot abort rollout ${id}: it is aborted`));
    const audit = await cli(['audit', '--json'], env);
    for (const action of ['rollout.pause', 'rollout.resume', 'rollout.promote', 'rollout.abort']) {
      assert.ok(audit.stdout.includes(`"action": "${action}"`), `${action} not audited`);
    }
  });

  it('exits 3 at --timeout while a manual gate waits, says how to follow; promote then lets follow end with 0', async () => {
    const file = await deployJson(['g1', 'g2']);
    const policy = await write({ batches: [{ size: '100%', advance: 'manual' }], bake: '0' });
    const started = Date.now();
    const r = await cli(['deploy', 'activate', file, '--rollout', policy, '--timeout', '2s'], env);
    assert.equal(r.code, 3, r.stdout + r.stderr);
    assert.ok(Date.now() - started >= 2000);
    const id = Number(
      /^rollout (\d+): staged over 1 batch \(100%: 2 agents\) to g1, g2$/m.exec(r.stderr)?.[1],
    );
    assert.ok(id > 0, r.stderr);
    assert.match(
      r.stderr,
      new RegExp(
        `^waiting: batch 1 of 1 \\(100%\\) waits for promote \\(manual gate\\): cairn deploy promote ${id}$`,
        'm',
      ),
    );
    assert.match(
      r.stderr,
      new RegExp(
        `cairn: rollout ${id} is still pending at the timeout .*follow it with: cairn deploy follow ${id}`,
      ),
    );
    assert.match(r.stdout, /g1\s+1 \(100%\)\s+pending\s+pending/);

    const promoted = await cli(['deploy', 'promote', String(id)], env);
    assert.equal(promoted.code, 0, promoted.stderr);
    // Both agents are offline: deferred, so the only batch is done and the rollout succeeds.
    const f = await cli(['deploy', 'follow', String(id), '--timeout', '30s'], env);
    assert.equal(f.code, 0, f.stdout + f.stderr);
    assert.match(f.stderr, new RegExp(`^rollout ${id}: succeeded$`, 'm'));
    assert.match(f.stdout, /g1\s+1 \(100%\)\s+deferred\s+pending/);
  });

  it('exits 3 at --timeout for a rollout that is not staged, naming the unfinished agent', async () => {
    const r = await cli(['deploy', 'activate', '--timeout', '1s', await deployJson(['o1'])], env);
    assert.equal(r.code, 3, r.stdout + r.stderr);
    assert.match(
      r.stderr,
      /timed out with 1 deployment\(s\) not finished: o1 \(pending\); follow it with: cairn deploy follow \d+/,
    );
  });
});
