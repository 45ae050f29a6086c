/**
 * bench/deploy: what Cairn adds to a deployment, measured as CI and machines run it. Builds the
 * bundle from this checkout, starts `node bin/cairn.js server` and N `node bin/cairn.js deploy
 * agent` processes (real agents, real nix, one profile each, on loopback), then deploys a no-op
 * plain profile (already in the store; its `bin/activate` prints one line) to 1 and to N agents:
 *
 * - **CLI wall**: `node bin/cairn.js deploy activate deploy.json` with an activate token, from
 *   spawn to exit 0 (every deployment `succeeded`, the agents having reconnected and had their
 *   activation confirmed);
 * - **by hand**: the same switch without Cairn, on every machine at once:
 *   `nix-store --realise P && nix-env --profile PROFILE --set P && P/bin/activate`;
 * - **overhead** = CLI wall − by hand, per round (rounds alternate the two), median; for reading
 *   it, the wall time of `node bin/cairn.js --version` (starting the CLI alone) is shown beside it;
 * - **CPU per deployment**: the server's CPU time (utime + stime from /proc) over the rollout,
 *   divided by the deployments; the agents' own CPU (their nix children excluded) and the CLI's
 *   the same way.
 * Target: overhead under 150 ms for one agent.
 *
 * Usage: npm run bench:deploy [-- --rounds 5 --agents 1,20]
 * The last line is a JSON object with the figures.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { buildPackages, nixEnv, RUN_TAG, run } from '../test/helpers/nix.ts';
import { freePort } from '../test/helpers/server-process.ts';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const CAIRN = join(ROOT, 'bin/cairn.js');
const TARGET_OVERHEAD_MS = 150;

const { values } = parseArgs({
  options: { rounds: { type: 'string', default: '5' }, agents: { type: 'string', default: '1,20' } },
});
const rounds = Number(values.rounds);
const sizes = values.agents.split(',').map(Number);
const maxAgents = Math.max(...sizes);

/** CPU time (ms) from /proc/PID/stat: the process's own, and that of its children it waited for. */
async function procCpuMs(pid: number | 'self'): Promise<{ own: number; children: number }> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
  const f = stat
    .slice(stat.lastIndexOf(')') + 2)
    .split(' ')
    .map(Number);
  // Fields 14-17 of proc(5) (utime, stime, cutime, cstime), counted from field 3 here, in ticks.
  const ticks = 100;
  return { own: ((f[11]! + f[12]!) * 1000) / ticks, children: ((f[13]! + f[14]!) * 1000) / ticks };
}

/** Runs `node bin/cairn.js ...args` to completion; returns stdout, throws with stderr on failure. */
function cairn(args: string[], env: NodeJS.ProcessEnv): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CAIRN, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
    });
    child.stderr.on('data', (d: Buffer) => {
      err += d.toString();
    });
    child.on('error', reject);
    child.on('exit', (code) =>
      code === 0 ? resolve(out) : reject(new Error(`cairn ${args.join(' ')} exited ${code}: ${err}${out}`)),
    );
  });
}

/** Starts a long-running `cairn` process; resolves once a line of its output matches `ready`. */
async function startCairn(
  args: string[],
  env: NodeJS.ProcessEnv,
  ready: RegExp,
): Promise<{ child: ChildProcess; stop: () => Promise<void> }> {
  const child = spawn(process.execPath, [CAIRN, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`cairn ${args[0]} not ready in 120 s: ${out}`)), 120_000);
    const onData = (d: Buffer) => {
      out = (out + d.toString()).slice(-8000);
      if (ready.test(out)) {
        clearTimeout(timer);
        resolve();
      }
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    child.on('exit', (code) => reject(new Error(`cairn ${args[0]} exited ${code}: ${out}`)));
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  return {
    child,
    stop: async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      await exited;
    },
  };
}

const median = (xs: readonly number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

const work = await mkdtemp(join(tmpdir(), 'cairn-bench-deploy-'));
const stops: Array<() => Promise<void>> = [];
try {
  // Measure this checkout: bin/cairn.js runs dist/cairn.mjs, built from src/ here and now.
  await run(process.execPath, ['--import', 'tsx', join(ROOT, 'scripts/build.ts')], {
    env: process.env,
    cwd: ROOT,
  });
  const git = (args: string[]) => run('git', ['-C', ROOT, ...args], { env: process.env }).catch(() => '?');
  const commit = (await git(['rev-parse', 'HEAD'])).trim();
  const srcDirty = (await git(['status', '--porcelain', '--', 'src'])).trim() !== '';
  console.log(
    `cairn: bin/cairn.js built from ${commit}${srcDirty ? ' WITH UNCOMMITTED CHANGES in src/' : ''}`,
  );

  const port = await freePort();
  const server = `http://127.0.0.1:${port}`;
  const serverProc = await startCairn(
    ['server', '--listen', `127.0.0.1:${port}`, '--data-dir', join(work, 'server'), '--log-level', 'info'],
    { ...process.env },
    /cairn server listening/,
  );
  stops.push(serverProc.stop);
  const admin = {
    ...nixEnv(),
    CAIRN_SERVER: server,
    CAIRN_TOKEN: (await readFile(join(work, 'server', 'admin-token'), 'utf8')).trim(),
  };
  await cairn(['cache', 'create', 'main'], admin);
  const name = `noop-${RUN_TAG}`;
  const paths = await buildPackages([
    {
      name,
      script:
        'mkdir -p $out/bin; printf "#!/bin/sh\\necho activated\\n" > $out/bin/activate; chmod +x $out/bin/activate',
    },
  ]);
  const noop = paths.get(name)!;
  await cairn(['push', 'main', noop], admin);
  // As CI runs it: an activate token, not the admin one.
  const { CAIRN_TOKEN: _, ...withoutAdmin } = admin;
  const ci = {
    ...withoutAdmin,
    CAIRN_ACTIVATE_TOKEN: (await cairn(['token', 'create', '--scope', 'activate'], admin)).trim(),
  };

  const agents: Array<{ name: string; pid: number }> = [];
  for (let i = 0; i < maxAgents; i++) {
    const agentName = `bench${i}`;
    const token = (await cairn(['agent', 'create', agentName], admin)).trim();
    const stateDir = join(work, agentName);
    const proc = await startCairn(
      ['deploy', 'agent', agentName, join(work, 'profiles', agentName), '--state-dir', stateDir],
      nixEnv({ CAIRN_SERVER: server, CAIRN_AGENT_TOKEN: token, XDG_CACHE_HOME: join(stateDir, 'xdg-cache') }),
      /connected to/,
    );
    stops.push(proc.stop);
    agents.push({ name: agentName, pid: proc.child.pid! });
  }
  await mkdir(join(work, 'by-hand'), { recursive: true });

  /** The same switch without Cairn, on `n` machines at once; resolves with the wall time (ms). */
  const byHand = async (n: number): Promise<number> => {
    const t0 = performance.now();
    await Promise.all(
      agents
        .slice(0, n)
        .map((a) =>
          run(
            'sh',
            [
              '-c',
              'nix-store --realise "$1" >/dev/null && nix-env --profile "$2" --set "$1" && "$1/bin/activate"',
              'sh',
              noop,
              join(work, 'by-hand', a.name),
            ],
            { env: nixEnv() },
          ),
        ),
    );
    return performance.now() - t0;
  };

  const results: Record<string, Record<string, number>> = {};
  for (const n of sizes) {
    const chosen = agents.slice(0, n);
    const deployJson = join(work, `deploy-${n}.json`);
    await writeFile(
      deployJson,
      JSON.stringify({ agents: Object.fromEntries(chosen.map((a) => [a.name, noop])) }),
    );
    const samples: Array<Record<string, number>> = [];
    for (let r = 0; r < rounds + 1; r++) {
      const hand = await byHand(n);
      // For reading the overhead: what starting the CLI alone costs.
      const s0 = performance.now();
      await cairn(['--version'], ci);
      const cliStart = performance.now() - s0;
      const before = await Promise.all([
        procCpuMs(serverProc.child.pid!),
        procCpuMs('self'),
        ...chosen.map((a) => procCpuMs(a.pid)),
      ]);
      const t0 = performance.now();
      await cairn(['deploy', 'activate', deployJson], ci);
      const wall = performance.now() - t0;
      const after = await Promise.all([
        procCpuMs(serverProc.child.pid!),
        procCpuMs('self'),
        ...chosen.map((a) => procCpuMs(a.pid)),
      ]);
      if (r === 0) continue; // warm-up
      const delta = (i: number, k: 'own' | 'children') => after[i]![k] - before[i]![k];
      const agentsOwn = chosen.reduce((s, _, i) => s + delta(i + 2, 'own'), 0);
      samples.push({
        cliWallMs: wall,
        byHandMs: hand,
        overheadMs: wall - hand,
        cliStartMs: cliStart,
        serverCpuMs: delta(0, 'own') / n,
        // The CLI is the only child this process waits for between the two readings.
        cliCpuMs: delta(1, 'children') / n,
        agentCpuMs: agentsOwn / n,
      });
    }
    const m = (k: string) => Math.round(median(samples.map((s) => s[k]!)));
    const figures = {
      cliWallMs: m('cliWallMs'),
      byHandMs: m('byHandMs'),
      overheadMs: m('overheadMs'),
      cliStartMs: m('cliStartMs'),
      serverCpuMsPerDeployment: m('serverCpuMs'),
      agentCpuMsPerDeployment: m('agentCpuMs'),
      cliCpuMsPerDeployment: m('cliCpuMs'),
    };
    results[`agents_${n}`] = figures;
    const target =
      n === 1
        ? ` (target < ${TARGET_OVERHEAD_MS} ms: ${figures.overheadMs < TARGET_OVERHEAD_MS ? 'met' : 'MISSED'})`
        : '';
    console.log(
      `${String(n).padStart(3)} agent(s): deploy activate ${figures.cliWallMs} ms, by hand ${figures.byHandMs} ms, overhead ${figures.overheadMs} ms${target} (of which starting the CLI ${figures.cliStartMs} ms); ` +
        `CPU per deployment: server ${figures.serverCpuMsPerDeployment} ms, agent ${figures.agentCpuMsPerDeployment} ms, CLI ${figures.cliCpuMsPerDeployment} ms [median of ${rounds}]`,
    );
  }
  console.log(JSON.stringify({ bench: 'deploy', commit, srcDirty, rounds, ...results }));
} finally {
  for (const stop of stops.reverse()) await stop().catch(() => {});
  await rm(work, { recursive: true, force: true });
}
