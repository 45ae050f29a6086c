/**
 * Seeds a database with 1,000 agents and 10,000 deployments (with closures and logs: every
 * deployment a short NixOS switch log, every 100th a long one of 5,000 lines, written through the
 * server's own LogWriter), then prints the server time of the dashboard's pages: the fleet page,
 * an agent page, a rollout page, and a deployment page with a short and with a long log (from the
 * Server-Timing header the dashboard sets, and the wall time seen by the client). Target: all
 * under 200 ms at p95.
 * Usage: node --import tsx bench/dashboard.ts [--agents N] [--deployments N] [--runs N]
 *   [--log-lines N] [--long-log-every N]
 */
import { createHash } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import pino from 'pino';
import { type LogTarget, LogWriter } from '../src/server/agents/log-writer.ts';
import { closureDigest, pathDigest } from '../src/server/db/closure-digest.ts';
import { LogLineRepository } from '../src/server/db/log-line-repository.ts';
import { openDatabase } from '../src/server/db/open-database.ts';
import { parseServerConfig } from '../src/server/server-config.ts';
import { startServer } from '../src/server/start-server.ts';

const { values } = parseArgs({
  options: {
    agents: { type: 'string', default: '1000' },
    deployments: { type: 'string', default: '10000' },
    runs: { type: 'string', default: '30' },
    'log-lines': { type: 'string', default: '5000' },
    'long-log-every': { type: 'string', default: '100' },
  },
});
const LONG_LOG_LINES = Number(values['log-lines']);
const LONG_LOG_EVERY = Number(values['long-log-every']);
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

/**
 * The log of a NixOS switch as the agent sends it: the realise command, the paths Nix fetches
 * and a copying line for each, the activation's output and the confirmation. With `lines` 0,
 * nothing to fetch (17 lines); else about `lines` lines, nearly all of them the download, as
 * after a nixpkgs update.
 */
function switchLog(storePath: string, t0: number, lines: number): Array<{ t: number; text: string }> {
  const text: string[] = [`$ nix-store --realise ${storePath}`];
  const fetched = lines > 0 ? Math.max(1, Math.floor((lines - 18) / 2)) : 0;
  if (fetched > 0) {
    text.push(
      `these ${fetched} paths will be fetched (${(fetched * 1.7).toFixed(1)} MiB download, ${(fetched * 6.2).toFixed(1)} MiB unpacked):`,
    );
    for (let i = 0; i < fetched; i++) text.push(`  ${fakePath(`pkg${i}-1.${i % 7}`)}`);
    for (let i = 0; i < fetched; i++) {
      text.push(
        `copying path '${fakePath(`pkg${i}-1.${i % 7}`)}' from 'https://cairn.example.com/cache/main'...`,
      );
    }
  }
  text.push(
    'kind: nixos',
    `previous: ${fakePath('nixos-system-host-26.05.0')}`,
    `$ nix-env --profile /nix/var/nix/profiles/system --set ${storePath}`,
    `$ ${storePath}/bin/switch-to-configuration switch`,
    'stopping the following units: nginx.service, prometheus-node-exporter.service',
    'activating the configuration...',
    'setting up /etc...',
    'reloading user units for root...',
    'restarting sysinit-reactivation.target',
    'reloading the following units: dbus.service',
    'restarting the following units: sshd.service, systemd-journald.service',
    'starting the following units: nginx.service, prometheus-node-exporter.service',
    'the following new units were started: run-credentials-systemd\\x2dtmpfiles\\x2dresetup.service.mount',
  );
  text.push(
    'confirming over a new connection (timeout 60s)',
    'the server confirmed the deployment',
    `deployed ${storePath}`,
  );
  return text.map((line, i) => ({ t: t0 + i * 5, text: line }));
}

/** A `closure_paths` row of a path without references. */
const pathRow = (path: string, narSize: number) => ({
  path,
  nar_size: narSize,
  refs: '',
  digest: pathDigest(path, narSize, ''),
});

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
      .values(shared.slice(i, i + 500).map((p, j) => pathRow(p, 10_000 + ((i + j) % 97) * 5000)))
      .execute();
  }
  await db
    .insertInto('closure_paths')
    .values(roots.map((p) => pathRow(p, 50_000)))
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
        digest: closureDigest(members.map((p) => pathDigest(p, sizeOf(p), ''))),
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
  // Logs, through the writer the server stores agents' log lines with (numbering and batching).
  const writer = new LogWriter(new LogLineRepository(db), (err) => {
    throw err;
  });
  const deployments = await db
    .selectFrom('deployments')
    .innerJoin('agents', 'agents.id', 'deployments.agent_id')
    .select([
      'deployments.id',
      'deployments.rollout_id',
      'deployments.store_path',
      'deployments.created_at',
      'agents.name',
    ])
    .orderBy('deployments.id')
    .execute();
  let logLines = 0;
  const longLogIds: number[] = [];
  for (const [i, d] of deployments.entries()) {
    const long = i % LONG_LOG_EVERY === LONG_LOG_EVERY - 1;
    if (long) longLogIds.push(d.id);
    const lines = switchLog(d.store_path, d.created_at + 1000, long ? LONG_LOG_LINES : 0);
    const target: LogTarget = { deploymentId: d.id, rolloutId: d.rollout_id, agent: d.name };
    for (let j = 0; j < lines.length; j += 1000) {
      if (!writer.append(target, lines.slice(j, j + 1000))) await writer.flush();
    }
    logLines += lines.length;
  }
  await writer.flush();
  console.log(
    `seeded ${AGENTS} agents, ${DEPLOYMENTS} deployments, ${ROOTS} closures of ${PATHS_PER_CLOSURE} paths, ` +
      `${logLines} log lines (${longLogIds.length} logs of ${LONG_LOG_LINES} lines) in ${((performance.now() - seedStart) / 1000).toFixed(1)} s`,
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

  const figures: Record<
    string,
    { path: string; serverMedianMs: number; serverP95Ms: number; clientMedianMs: number; bytes: number }
  > = {};
  /** Fetches a page RUNS times after 3 for warm-up; prints and records the figures; returns its last body. */
  const measure = async (label: string, path: string): Promise<string> => {
    const serverMs: number[] = [];
    const wall: number[] = [];
    let bytes = 0;
    let last = '';
    for (let i = 0; i < RUNS + 3; i++) {
      const t0 = performance.now();
      const res = await fetch(`${server.url}${path}`, { headers: { Cookie: `cairn_session=${session}` } });
      const body = await res.text();
      const t1 = performance.now();
      if (res.status !== 200) throw new Error(`${path}: ${res.status}`);
      if (i < 3) continue; // warm-up
      bytes = body.length;
      last = body;
      serverMs.push(Number(/dur=([\d.]+)/.exec(res.headers.get('server-timing') ?? '')?.[1]));
      wall.push(t1 - t0);
    }
    const q = (xs: number[], p: number) =>
      [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(p * xs.length))]!;
    const round = (x: number) => Math.round(x * 10) / 10;
    figures[label] = {
      path,
      serverMedianMs: round(q(serverMs, 0.5)),
      serverP95Ms: round(q(serverMs, 0.95)),
      clientMedianMs: round(q(wall, 0.5)),
      bytes,
    };
    console.log(
      `${label.padEnd(34)} server median ${q(serverMs, 0.5).toFixed(1)} ms, p95 ${q(serverMs, 0.95).toFixed(1)} ms; ` +
        `client median ${q(wall, 0.5).toFixed(1)} ms; ${(bytes / 1024).toFixed(0)} KiB` +
        `${q(serverMs, 0.95) < 200 ? '  (under 200 ms)' : '  (OVER 200 ms)'}`,
    );
    return last;
  };
  await measure(`fleet page (${AGENTS} agents)`, '/');
  await measure('fleet page, filtered', '/?q=host-00&status=online');
  const someAgent = `host-${String(Math.floor(AGENTS / 2)).padStart(4, '0')}`;
  await measure(`agent page (${someAgent})`, `/agents/${someAgent}`);
  const last = deployments.at(-1)!;
  await measure(`rollout page (${AGENTS} deployments)`, `/rollouts/${last.rollout_id}`);
  const shortLog = deployments.findLast((d) => !longLogIds.includes(d.id))!;
  await measure('deployment page, short log', `/deployments/${shortLog.id}`);
  const longLog = longLogIds.at(-1);
  if (longLog !== undefined) {
    const body = await measure(`deployment page, ${LONG_LOG_LINES}-line log`, `/deployments/${longLog}`);
    // The page must hold the log it is timed with.
    const shown = body.split('copying path').length - 1;
    if (shown < (LONG_LOG_LINES - 18) / 2 - 1)
      throw new Error(`the long log page shows ${shown} copying lines`);
  }
  console.log(
    JSON.stringify({
      bench: 'dashboard',
      agents: AGENTS,
      deployments: DEPLOYMENTS,
      logLines,
      longLogs: longLogIds.length,
      longLogLines: LONG_LOG_LINES,
      runs: RUNS,
      pages: figures,
    }),
  );
} finally {
  await db.destroy();
  await server.close();
  if (process.env.KEEP) console.log(dataDir);
  else await rm(dataDir, { recursive: true, force: true });
}
