import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { sql } from 'kysely';
import type { WebSocket } from 'ws';
import { helloAgentSocket, observedState } from '../helpers/agent-hello.ts';
import { narinfoText, rawRequest, type SyntheticPath, syntheticPath } from '../helpers/binary-cache.ts';
import { adminApi, startTestServer, type TestServer } from '../helpers/server.ts';
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
      const plan = (await api('POST', '/plan', { agents: { box: sys2.storePath } })) as {
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
    const planAfter = await api('POST', '/plan', { agents: { box: sys2.storePath } });
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
