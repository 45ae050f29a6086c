import assert from 'node:assert/strict';
import { bearer, createTestCache, narinfoText, rawRequest, syntheticPath } from './binary-cache.ts';
import type { TestServer } from './server.ts';

/** A rollout made without Nix: a synthetic path pushed to a cache and deployed to a new agent. */
export interface PendingRollout {
  readonly agent: string;
  readonly storePath: string;
  readonly rolloutId: number;
  readonly deploymentId: number;
}

/**
 * Creates cache `main` (once per server), an agent `agent`, pushes a synthetic store path and
 * deploys it to the agent. No agent runs: the deployment stays pending.
 */
export async function pendingRollout(server: TestServer, agent: string): Promise<PendingRollout> {
  const api = (p: string) => `${server.url}/api/v1/workspaces/default/${p}`;
  const admin = { ...bearer(server.adminToken), 'Content-Type': 'application/json' };
  const cache = await createTestCache(server, `c-${agent}`);
  const p = syntheticPath(`sys-${agent}`, `system of ${agent}`);
  const push = bearer(cache.pushToken);
  assert.equal(
    (await rawRequest(`${cache.url}/nar/${p.narFile}`, { method: 'PUT', headers: push, body: p.nar })).status,
    201,
  );
  const narinfo = await rawRequest(`${cache.url}/${p.hashPart}.narinfo`, {
    method: 'PUT',
    headers: push,
    body: narinfoText(p.fields),
  });
  assert.equal(narinfo.status, 201, narinfo.body);
  const created = await fetch(api('agents'), {
    method: 'POST',
    headers: admin,
    body: JSON.stringify({ name: agent }),
  });
  assert.equal(created.status, 201, await created.clone().text());
  const rollout = await fetch(api('rollouts'), {
    method: 'POST',
    headers: admin,
    body: JSON.stringify({ agents: { [agent]: p.storePath } }),
  });
  assert.equal(rollout.status, 201, await rollout.clone().text());
  const body = (await rollout.json()) as { id: number; deployments: Array<{ id: number }> };
  return { agent, storePath: p.storePath, rolloutId: body.id, deploymentId: body.deployments[0]!.id };
}
