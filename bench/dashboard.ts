/**
 * Seeds a database with 1,000 agents and 10,000 deployments (with closures and log lines), then
 * prints the server time of the dashboard's fleet page and of an agent page (from the
 * Server-Timing header the dashboard sets, and the wall time seen by the client). Target: both
 * under 200 ms. Usage: node --import tsx bench/dashboard.ts [--agents N] [--deployments N] [--runs N]
 */
import { createHash } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import pino from 'pino';
import { openDatabase } from '../src/server/db/open-database.ts';
import { parseServerConfig } from '../src/server/server-config.ts';
import { startServer } from '../src/server/start-server.ts';

const { values } = parseArgs({
  options: {
    agents: { type: 'string', default: '1000' },
    deployments: { type: 'string', default: '10000' },
    runs: { type: 'string', default: '30' },
  },
});
const AGENTS = Number(values.agents);
const DEPLOYMENTS = Number(values.deployments);
const RUNS = Number(values.runs);
const ROOTS = 50;
const PATHS_PER_CLOSURE = 400;

const fakePath = (name: string) =>
  `/nix/store/${createHash('sha256')
    .update(name)
    .digest('hex')
    .slice(0, 32)
    .replace(/[eotu]/g, 'a')}-${name}`;

const dataDir = await mkdtemp(join(tmpdir(), 'cairn-bench-dashboard-'));
const config = parseServerConfig({ listen: '127.0.0.1:0', dataDir, logLevel: 'silent' }, {});
const server = await startServer(config, { log: pino({ level: 'silent' }) });
const token = (await readFile(join(dataDir, 'admin-token'), 'utf8')).trim();
const { db } = openDatabase(config.database);

try {
  const seedStart = performance.now();
  const now = Date.now();
  const ws = await db
    .selectFrom('workspaces')
    .select('id')
    .where('name', '=', 'default')
    .executeTakeFirstOrThrow();
  const roots = Array.from({ length: ROOTS }, (_, i) => fakePath(`nixos-system-host-26.05.${i}`));
  // Closures: each root shares most of its paths with the others, as NixOS systems do.
  const shared = Array.from({ length: PATHS_PER_CLOSURE * 2 }, (_, i) => fakePath(`pkg${i}-1.${i % 7}`));
  for (let i = 0; i < shared.length; i += 500) {
    await db
      .insertInto('closure_paths')
      .values(
        shared
          .slice(i, i + 500)
          .map((p, j) => ({ path: p, nar_size: 10_000 + ((i + j) % 97) * 5000, refs: '' })),
      )
      .execute();
  }
  await db
    .insertInto('closure_paths')
    .values(roots.map((p) => ({ path: p, nar_size: 50_000, refs: '' })))
    .execute();
  const ids = new Map(
    (await db.selectFrom('closure_paths').select(['id', 'path']).execute()).map((r) => [r.path, r.id]),
  );
  for (const [r, root] of roots.entries()) {
    const members = [root, ...shared.slice(r * 8, r * 8 + PATHS_PER_CLOSURE - 1)];
    const sizeOf = (p: string) => (p === root ? 50_000 : 10_000 + (shared.indexOf(p) % 97) * 5000);
    const c = await db
      .insertInto('closures')
      .values({
        workspace_id: ws.id,
        root,
        complete: 1,
        path_count: members.length,
        nar_size: members.reduce((s, p) => s + sizeOf(p), 0),
        created_at: now,
      })
      .returning('id')
      .executeTakeFirstOrThrow();
    for (let i = 0; i < members.length; i += 500) {
      await db
        .insertInto('closure_members')
        .values(members.slice(i, i + 500).map((p) => ({ closure_id: c.id, path_id: ids.get(p)! })))
        .execute();
    }
  }
  const kinds = ['nixos', 'nixos', 'nixos', 'nix-darwin', 'home-manager', 'plain'];
  for (let i = 0; i < AGENTS; i += 250) {
    await db
      .insertInto('agents')
      .values(
        Array.from({ length: Math.min(250, AGENTS - i) }, (_, j) => {
          const n = i + j;
          return {
            workspace_id: ws.id,
            name: `host-${String(n).padStart(4, '0')}`,
            token_id: 'bench',
            created_at: now - 90 * 86_400_000,
            online: n % 5 === 0 ? 0 : 1,
            last_seen_at: now - (n % 5 === 0 ? 3_600_000 : 0),
            store_path: roots[n % ROOTS]!,
            generation: 10,
            kind: kinds[n % kinds.length]!,
            system: 'x86_64-linux',
            hostname: `host-${n}`,
            agent_version: '0.1.0',
            nix_version: '2.24.0',
            profile: '/nix/var/nix/profiles/system',
          };
        }),
      )
      .execute();
  }
  const agentIds = (await db.selectFrom('agents').select('id').orderBy('id').execute()).map((r) => r.id);
  const perRollout = AGENTS;
  const states = ['succeeded', 'succeeded', 'succeeded', 'succeeded', 'failed', 'rolled-back'];
  for (let made = 0; made < DEPLOYMENTS; made += perRollout) {
    const t = now - (DEPLOYMENTS - made) * 60_000;
    const rollout = await db
      .insertInto('rollouts')
      .values({ workspace_id: ws.id, created_at: t, created_by: 'bench' })
      .returning('id')
      .executeTakeFirstOrThrow();
    const count = Math.min(perRollout, DEPLOYMENTS - made);
    for (let i = 0; i < count; i += 250) {
      await db
        .insertInto('deployments')
        .values(
          Array.from({ length: Math.min(250, count - i) }, (_, j) => {
            const n = made + i + j;
            const root = roots[(n + made / perRollout) % ROOTS]!;
            return {
              rollout_id: rollout.id,
              workspace_id: ws.id,
              agent_id: agentIds[(i + j) % agentIds.length]!,
              store_path: root,
              exit4: 'fail',
              state: states[n % states.length]!,
              created_at: t,
              started_at: t + 1000,
              finished_at: t + 40_000,
              closure_nar_size: 5_000_000_000 + (n % 13) * 10_000_000,
            };
          }),
        )
        .execute();
    }
  }
  console.log(
    `seeded ${AGENTS} agents, ${DEPLOYMENTS} deployments, ${ROOTS} closures of ${PATHS_PER_CLOSURE} paths in ${((performance.now() - seedStart) / 1000).toFixed(1)} s`,
  );

  // Sign in as a browser does.
  const loginPage = await fetch(`${server.url}/login`);
  const nonce = /cairn_login=([^;]+)/.exec(loginPage.headers.get('set-cookie') ?? '')![1]!;
  const login = await fetch(`${server.url}/login`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/x-www-form-urlencoded', Cookie: `cairn_login=${nonce}` },
    body: new URLSearchParams({ _csrf: nonce, token, next: '/' }).toString(),
    redirect: 'manual',
  });
  const session = /cairn_session=([^;]+)/.exec(login.headers.get('set-cookie') ?? '')?.[1];
  if (!session) throw new Error(`Cannot sign in: ${login.status}`);

  const measure = async (label: string, path: string) => {
    const serverMs: number[] = [];
    const wall: number[] = [];
    let bytes = 0;
    for (let i = 0; i < RUNS + 3; i++) {
      const t0 = performance.now();
      const res = await fetch(`${server.url}${path}`, { headers: { Cookie: `cairn_session=${session}` } });
      const body = await res.text();
      const t1 = performance.now();
      if (res.status !== 200) throw new Error(`${path}: ${res.status}`);
      if (i < 3) continue; // warm-up
      bytes = body.length;
      serverMs.push(Number(/dur=([\d.]+)/.exec(res.headers.get('server-timing') ?? '')?.[1]));
      wall.push(t1 - t0);
    }
    const q = (xs: number[], p: number) =>
      [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(p * xs.length))]!;
    console.log(
      `${label.padEnd(28)} server median ${q(serverMs, 0.5).toFixed(1)} ms, p95 ${q(serverMs, 0.95).toFixed(1)} ms; ` +
        `client median ${q(wall, 0.5).toFixed(1)} ms; ${(bytes / 1024).toFixed(0)} KiB` +
        `${q(serverMs, 0.95) < 200 ? '  (under 200 ms)' : '  (OVER 200 ms)'}`,
    );
  };
  await measure(`fleet page (${AGENTS} agents)`, '/');
  await measure('fleet page, filtered', '/?q=host-00&status=online');
  await measure('agent page (host-0500)', '/agents/host-0500');
  const some = await db
    .selectFrom('deployments')
    .select('id')
    .orderBy('id', 'desc')
    .limit(1)
    .executeTakeFirstOrThrow();
  await measure('deployment page (with diff)', `/deployments/${some.id}`);
} finally {
  await db.destroy();
  await server.close();
  if (process.env.KEEP) console.log(dataDir);
  else await rm(dataDir, { recursive: true, force: true });
}
