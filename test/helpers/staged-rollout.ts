import assert from 'node:assert/strict';
import { adminApi } from './server.ts';

/** What a test reads of `GET .../rollouts/:id` for a staged rollout. */
export interface StagedView {
  staged: {
    state: string;
    reason: string | null;
    waiting: string | null;
    batch: number;
    batches: Array<{ index: number; label: string; state: string; agents: number }>;
  };
  deployments: Array<{
    id: number;
    agent: string;
    storePath: string;
    state: string;
    reason: string | null;
    batch: number | null;
    rolloutState: string | null;
    startedAt: string | null;
    finishedAt: string | null;
  }>;
}

/** A server as {@link adminApi} needs it: its URL and an admin token. */
type ApiServer = Parameters<typeof adminApi>[0];

/** The rollout as the API shows it. */
export async function getRollout(
  server: Pick<ApiServer, 'url' | 'adminToken'>,
  id: number,
): Promise<StagedView> {
  return (await adminApi(server as ApiServer, 'GET', `/rollouts/${id}`)) as unknown as StagedView;
}

/** Polls the rollout until `ok` holds of it; fails with the last view after `timeoutMs`. */
export async function waitRollout(
  server: Pick<ApiServer, 'url' | 'adminToken'>,
  id: number,
  ok: (r: StagedView) => boolean,
  timeoutMs = 30_000,
): Promise<StagedView> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const r = await getRollout(server, id);
    if (ok(r)) return r;
    if (Date.now() > deadline)
      throw new Error(
        `rollout ${id} did not get there within ${timeoutMs} ms: ${JSON.stringify(r, null, 1)}`,
      );
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}

/** POSTs a staged-rollout operation (pause, resume, promote, abort) and returns the answer. */
export async function operate(
  server: Pick<ApiServer, 'url' | 'adminToken'>,
  id: number,
  op: 'pause' | 'resume' | 'promote' | 'abort',
  body?: object,
): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await fetch(`${server.url}/api/v1/workspaces/default/rollouts/${id}/${op}`, {
    method: 'POST',
    headers: {
      Authorization: `Bearer ${server.adminToken}`,
      ...(body === undefined ? {} : { 'Content-Type': 'application/json' }),
    },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

/** A NixOS-kind closure whose switch sleeps `seconds` first, then records as nixosPackage's does. */
export function slowNixosPackage(name: string, record: string, seconds: number) {
  return {
    name,
    script: [
      'mkdir -p $out/bin',
      'echo 24.05 > $out/nixos-version',
      `printf '#!/bin/sh\\nsleep ${seconds}\\necho "$(dirname $(dirname $0)) $1" >> ${record}\\necho switching to configuration\\n' > $out/bin/switch-to-configuration`,
      'chmod +x $out/bin/switch-to-configuration',
    ].join('; '),
  };
}

export const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Polls `check` every 200 ms until it gives a value; fails naming `what` after `ms`. */
export async function until<T>(what: string, check: () => Promise<T | undefined>, ms = 30_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await check();
    if (v !== undefined) return v;
    assert.ok(Date.now() < deadline, `${what}: not within ${ms} ms`);
    await sleep(200);
  }
}
