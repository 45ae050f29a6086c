import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { sql } from 'kysely';
import type { WebSocket } from 'ws';
import { deploymentDiffSchema, rolloutPlanSchema } from '../../src/protocol/api-schemas.ts';
import { formatBytes } from '../../src/server/dashboard/format.ts';
import { helloAgentSocket, observedState } from '../helpers/agent-hello.ts';
import { narinfoText, rawRequest, type SyntheticPath, syntheticPath } from '../helpers/binary-cache.ts';
import { signInToDashboard } from '../helpers/dashboard-session.ts';
import { plainSystem, sizedPackage } from '../helpers/deploy-fixtures.ts';
import { useDeployTestbed } from '../helpers/deploy-testbed.ts';
import { run } from '../helpers/nix.ts';
import { adminApi, cli, startTestServer, type TestServer } from '../helpers/server.ts';
import { until } from '../helpers/staged-rollout.ts';

const base = (p: SyntheticPath) => p.storePath.slice('/nix/store/'.length);

/**
 * Issue #23, finding 4: an agent's `closure` report was accepted for any of its deployments in
 * any state, went into data shared by every agent, and was preferred over what the caches
 * verified: one agent made another agent's diff show "openssh-backdoored added" and a plan show
 * 100 GB. A real server, real caches, and agents speaking over real WebSockets.
 */
describe("an agent's false closure report", () => {
  let server: TestServer;
  const api = (method: string, path: string, body?: unknown) => adminApi(server, method, path, body);
  const lib = syntheticPath('libc-2.39', 'libc');
  const sys1 = syntheticPath('nixos-system-box-24.05', 'system one', [base(lib)]);
  const sys2 = syntheticPath('nixos-system-box-24.11', 'system two', [base(lib)]);
  const backdoor = '/nix/store/00000000000000000000000000000000-openssh-backdoored-9.9';

  /** An agent connection that said hello; `next` waits for a message of a type. */
  async function connect(name: string) {
    const { token } = (await api('POST', '/agents', { name })) as { token: string };
    const agent = await helloAgentSocket(server.url, name, token);
    // Welcomed before any rollout is posted: one posted before the hello is handled would come
    // in the welcome, not as the `desired` message next() waits for.
    await agent.next('welcome');
    /** The next deployment the agent is told to run. */
    const next = async () => (await agent.next('desired', (m) => m.desired !== null)).desired!;
    return { ws: agent.ws, next, send: agent.send };
  }

  /** A false closure of `root`: a backdoor among its paths, and 100 GB in size. */
  const lie = (deploymentId: string, root: string) => ({
    type: 'closure',
    deploymentId,
    final: true,
    paths: [
      { path: root, narSize: 100 * 1024 ** 3, references: [backdoor, lib.storePath] },
      { path: lib.storePath, narSize: 1, references: [] },
      { path: backdoor, narSize: 5, references: [] },
    ],
  });

  /** Runs a deployment of `root` on `agent` to success. */
  const succeed = async (agent: Awaited<ReturnType<typeof connect>>, name: string, root: string) => {
    await api('POST', '/rollouts', { agents: { [name]: root } });
    const d = await agent.next();
    agent.send({
      type: 'result',
      result: { deploymentId: d.id, state: 'succeeded', step: null, reason: null, rebootRequired: false },
      observed: observedState(name, { storePath: root, generation: 1, kind: 'nixos' }),
    });
    return d.id;
  };

  let victim: { first: string; second: string };
  let boxSocket: WebSocket | undefined;
  before(async () => {
    server = await startTestServer();
    await api('POST', '/caches', { name: 'main' });
    const push = { Authorization: `Bearer ${server.adminToken}` };
    for (const p of [lib, sys1, sys2]) {
      for (const [path, body] of [
        [`nar/${p.narFile}`, p.nar],
        [`${p.hashPart}.narinfo`, narinfoText(p.fields)],
      ] as const) {
        assert.equal(
          (await rawRequest(`${server.url}/cache/main/${path}`, { method: 'PUT', headers: push, body }))
            .status,
          201,
        );
      }
    }
    const box = await connect('box');
    boxSocket = box.ws;
    victim = { first: await succeed(box, 'box', sys1.storePath), second: '' };
    await api('POST', '/rollouts', { agents: { box: sys2.storePath } });
    victim.second = (await box.next()).id;
  });
  after(async () => {
    boxSocket?.close();
    await server?.stop();
  });

  it("leaves another agent's diff, plan and closure size as the caches verified them", async () => {
    const diffBefore = await api('GET', `/deployments/diff?from=${victim.first}&to=${victim.second}`);
    // Once the server recorded what box runs after its first deployment (written in a batch).
    const planBefore = await until('box running its first system', async () => {
      const plan = (await api('POST', '/plan?machines=false', { agents: { box: sys2.storePath } })) as {
        agents: Array<{ current: { storePath: string | null } }>;
      };
      return plan.agents[0]?.current.storePath === sys1.storePath ? plan : undefined;
    });

    // The attacker runs the same system as the victim will, and lies about its closure while its
    // deployment is in flight (when a report is accepted).
    const evil = await connect('evil');
    await api('POST', '/rollouts', { agents: { evil: sys2.storePath } });
    const d = await evil.next();
    evil.send({ type: 'progress', deploymentId: d.id, step: 'realise' });
    evil.send(lie(d.id, sys2.storePath));
    await until('the report recorded', async () => {
      const rows = await server.query<{ complete: number }>(
        sql`select complete from closures where root = ${sys2.storePath}`,
      );
      return Number(rows[0]?.complete) === 1 ? true : undefined;
    });

    const diffAfter = await api('GET', `/deployments/diff?from=${victim.first}&to=${victim.second}`);
    const planAfter = await api('POST', '/plan?machines=false', { agents: { box: sys2.storePath } });
    assert.doesNotMatch(JSON.stringify(diffAfter), /openssh-backdoored/);
    assert.doesNotMatch(JSON.stringify(planAfter), /openssh-backdoored/);
    assert.deepEqual(diffAfter, diffBefore);
    assert.deepEqual(planAfter, planBefore);
    // The size shown for deployments of that system is the verified one, not 100 GB.
    const sizes = await server.query<{ closure_nar_size: number | null }>(
      sql`select closure_nar_size from deployments where store_path = ${sys2.storePath}`,
    );
    const verified = [lib, sys2].reduce((sum, p) => sum + p.nar.length, 0);
    for (const s of sizes)
      assert.ok(
        s.closure_nar_size === null || Number(s.closure_nar_size) === verified,
        JSON.stringify(sizes),
      );
    evil.ws.close();
  });

  it('ignores a closure report for a finished deployment', async () => {
    const liar = await connect('late');
    const done = await succeed(liar, 'late', sys1.storePath);
    const before = await server.query<{ n: number | string }>(sql`select count(*) as n from closure_paths`);
    liar.send(lie(done, sys1.storePath));
    // Give the server time to handle it; then nothing may have been recorded.
    await new Promise((r) => setTimeout(r, 500));
    const afterRows = await server.query<{ n: number | string }>(
      sql`select count(*) as n from closure_paths`,
    );
    assert.equal(Number(afterRows[0]!.n), Number(before[0]!.n));
    const closures = await server.query<{ root: string }>(
      sql`select root from closures where root = ${sys1.storePath}`,
    );
    assert.equal(closures.length, 0);
    liar.ws.close();
  });
});

/** Rejects after `ms`: for a wait that must not outlive a failed test. */
const timeout = (ms: number, what: string) =>
  new Promise<never>((_, reject) =>
    setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), ms).unref(),
  );

/**
 * The same attack where the caches cannot answer: a cache whose index lacks a path of the
 * closures (as one filled before Cairn checked references may), so that diffs and plans rest on
 * what agents reported. A real agent process deploys the systems and reports their closures; a
 * compromised agent on a WebSocket lies about the same roots, after the honest report and before.
 */
describe("an agent's false report of a closure no cache holds whole, against a real agent", () => {
  const bed = useDeployTestbed();
  const backdoor = '/nix/store/00000000000000000000000000000000-openssh-backdoored-9.9';
  let paths: Map<string, string>;
  const path = (name: string) => paths.get(name)!;
  const api = (method: string, p: string, body?: unknown) => adminApi(bed.server, method, p, body);
  const diff = async (from: number, to: number) =>
    deploymentDiffSchema.parse(await api('GET', `/deployments/diff?from=${from}&to=${to}`));
  const plan = async (agents: Record<string, string>) =>
    rolloutPlanSchema.parse(await api('POST', '/plan?machines=false', { agents }));
  /** Deploys `storePath` to the real agent box and returns the deployment's id once it succeeded. */
  const deployBox = async (storePath: string) => {
    const r = await bed.activate({ agents: { box: storePath } });
    assert.equal(r.code, 0, r.stdout + r.stderr);
    const list = await cli(['deploy', 'list', '--agent', 'box', '--json'], bed.world.env);
    return (JSON.parse(list.stdout) as Array<{ id: number }>)[0]!.id;
  };
  /** The sum of the NAR sizes of `root`'s closure, as Nix itself says. */
  const narSizeOf = async (root: string) => {
    const requisites = (await run('nix-store', ['--query', '--requisites', root])).trim().split('\n');
    const sizes = (await run('nix-store', ['--query', '--size', ...requisites])).trim().split('\n');
    return sizes.reduce((sum, s) => sum + Number(s), 0);
  };

  /** The compromised agent: a socket that said hello, and runs deployments as told. */
  let evil: Awaited<ReturnType<typeof helloAgentSocket>>;
  /** A deployment of `root` to evil, in flight: it has started realising. */
  const evilDeploys = async (root: string) => {
    await api('POST', '/rollouts', { agents: { evil: root } });
    // Bounded: after a failed test evil may still be busy with a deployment, and never told.
    const told = evil.next('desired', (m) => m.desired?.storePath === root);
    const d = (await Promise.race([told, timeout(30_000, `evil told to deploy ${root}`)])).desired!;
    evil.send({ type: 'progress', deploymentId: d.id, step: 'realise' });
    return d.id;
  };
  /** Evil's false closure of `root` (a backdoor, 100 GB), and waits until the server recorded it. */
  const lie = async (deploymentId: string, root: string) => {
    evil.send({
      type: 'closure',
      deploymentId,
      final: true,
      paths: [
        { path: root, narSize: 100 * 1024 ** 3, references: [backdoor, path('lib-1.0')] },
        { path: path('lib-1.0'), narSize: 1, references: [] },
        { path: backdoor, narSize: 5, references: [] },
      ],
    });
    await until('the false report recorded', async () => {
      const rows = await bed.server.query<{ n: number | string }>(
        sql`select count(*) as n from deployments d join closures c on c.id = d.closure_id
            where d.id = ${Number(deploymentId)} and c.complete = 1`,
      );
      return Number(rows[0]?.n) === 1 ? true : undefined;
    });
  };
  /** Evil says its deployment of `root` succeeded, and waits until the server knows it runs it. */
  const evilSucceeds = async (deploymentId: string, root: string) => {
    evil.send({
      type: 'result',
      result: { deploymentId, state: 'succeeded', step: null, reason: null, rebootRequired: false },
      observed: observedState('evil', { storePath: root, generation: 1, kind: 'nixos' }),
    });
    await until('evil running its system', async () => {
      const p = await plan({ evil: path('sys-1') });
      return p.agents[0]?.current.storePath === root ? true : undefined;
    });
  };

  const ids: Record<string, number> = {};
  before(async () => {
    paths = await bed.world.publish([
      sizedPackage('lib-1.0', 4),
      sizedPackage('hello-1.0', 8),
      sizedPackage('hello-1.1', 12),
      sizedPackage('hello-1.2', 16),
      plainSystem('sys-1', ['lib-1.0', 'hello-1.0']),
      plainSystem('sys-2', ['lib-1.0', 'hello-1.1']),
      plainSystem('sys-3', ['lib-1.0', 'hello-1.2']),
    ]);
    await bed.agent('box');
    ids.first = await deployBox(path('sys-1'));
    ids.second = await deployBox(path('sys-2'));
    // The cache's index loses lib-1.0: no closure here is whole in a cache any more.
    await bed.server.query(sql`delete from store_paths where store_path = ${path('lib-1.0')}`);
    const whole = await plan({ box: path('sys-1') });
    assert.equal(whole.agents[0]!.proposed.source, 'agent', 'the cache still holds the whole closure');
    evil = await helloAgentSocket(bed.server.url, 'evil', await bed.world.createAgent('evil'));
    await evil.next('welcome');
  });
  after(() => evil?.ws.close());

  it("leaves the other agent's diff and plan as it reported them, when the lie comes after its report", async () => {
    const diffBefore = await diff(ids.first!, ids.second!);
    const planBefore = await plan({ box: path('sys-1') });
    // What box reported, marked as such: no cache could verify it.
    assert.deepEqual(
      [diffBefore.from.source, diffBefore.from.reportedBy, diffBefore.to.source, diffBefore.to.reportedBy],
      ['agent', 'box', 'agent', 'box'],
    );
    assert.equal(diffBefore.diff.packages.find((p) => p.pname === 'hello')?.change, 'upgraded');
    assert.equal(planBefore.agents[0]!.current.reportedBy, 'box');
    const shown = await cli(['deploy', 'diff', String(ids.first), String(ids.second)], bed.world.env);
    assert.equal(shown.code, 0, shown.stderr);
    assert.match(shown.stderr, /the after closure is as agent 'box' reported it, not verified by a cache/);

    const d = await evilDeploys(path('sys-2'));
    await lie(d, path('sys-2'));
    // While evil's deployment is in flight, and after it finished.
    assert.deepEqual(await diff(ids.first!, ids.second!), diffBefore);
    assert.deepEqual(await plan({ box: path('sys-1') }), planBefore);
    await evilSucceeds(d, path('sys-2'));
    const diffAfter = await diff(ids.first!, ids.second!);
    assert.deepEqual(diffAfter, diffBefore);
    assert.doesNotMatch(JSON.stringify(diffAfter), /openssh-backdoored/);
    assert.deepEqual(await plan({ box: path('sys-1') }), planBefore);
    const sizes = await bed.server.query<{ closure_nar_size: number | string }>(
      sql`select closure_nar_size from deployments where id = ${ids.second!}`,
    );
    assert.equal(Number(sizes[0]!.closure_nar_size), await narSizeOf(path('sys-2')));

    // The dashboard shows box's size as box reported it, on its page and its fleet row.
    const session = await signInToDashboard(bed.server.url, bed.server.adminToken);
    const page = async (p: string) => {
      const res = await fetch(`${bed.server.url}${p}`, { headers: { Cookie: session.cookie } });
      assert.equal(res.status, 200);
      return await res.text();
    };
    const boxSize = formatBytes(await narSizeOf(path('sys-2')));
    assert.ok((await page('/agents/box')).includes(`Closure size</dt><dd>${boxSize}<`), boxSize);
    const boxRow = /<tr data-agent="box">[\s\S]*?<\/tr>/.exec(await page('/'))?.[0];
    assert.ok(boxRow?.includes(boxSize), boxRow);
    assert.doesNotMatch(boxRow!, /GiB/);

    // The liar's own view shows its report, marked as its own and unverified.
    const own = await plan({ evil: path('sys-1') });
    assert.deepEqual([own.agents[0]!.current.source, own.agents[0]!.current.reportedBy], ['agent', 'evil']);
    assert.match(JSON.stringify(own.agents[0]!.diff), /openssh-backdoored/);
  });

  it("leaves the other agent's diff and plan as it reports them, when the lie comes first", async () => {
    const planBefore = await plan({ box: path('sys-3') });
    const d = await evilDeploys(path('sys-3'));
    await lie(d, path('sys-3'));
    // Box has not reported sys-3: its plan walks the cache and box's own reports, never evil's word.
    const planDuring = await plan({ box: path('sys-3') });
    assert.deepEqual(planDuring, planBefore);
    assert.doesNotMatch(JSON.stringify(planDuring), /openssh-backdoored/);

    ids.third = await deployBox(path('sys-3'));
    await evilSucceeds(d, path('sys-3'));
    const after = await diff(ids.second!, ids.third!);
    assert.deepEqual([after.to.source, after.to.reportedBy, after.to.missing], ['agent', 'box', 0]);
    assert.doesNotMatch(JSON.stringify(after), /openssh-backdoored/);
    const hello = after.diff.packages.find((p) => p.pname === 'hello')!;
    assert.deepEqual([hello.before.versions, hello.after.versions], [['1.1'], ['1.2']]);
    const rollback = await plan({ box: path('sys-2') });
    assert.doesNotMatch(JSON.stringify(rollback), /openssh-backdoored/);
    // What box downloads to go back: sys-2 and hello-1.1, a few KiB, not evil's 100 GB.
    assert.equal(rollback.agents[0]!.download.paths, 2);
    assert.ok(
      rollback.agents[0]!.download.narSize < 1024 * 1024,
      JSON.stringify(rollback.agents[0]!.download),
    );
    const sizes = await bed.server.query<{ closure_nar_size: number | string }>(
      sql`select closure_nar_size from deployments where id = ${ids.third!}`,
    );
    assert.equal(Number(sizes[0]!.closure_nar_size), await narSizeOf(path('sys-3')));
  });
});
