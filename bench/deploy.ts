/**
 * bench/deploy: time from `deploy activate` to `succeeded` for a no-op plain deployment to 1 and
 * to 20 local agents (real agent processes, real nix, real server on loopback), and Cairn's own
 * share of it: the total minus the time spent inside `nix` commands, which a PATH shim around
 * nix, nix-store and nix-env measures. Target: Cairn's overhead under 150 ms per deployment.
 *
 * Usage: npm run bench:deploy [-- --rounds 5 --agents 1,20]
 */
import { chmod, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import pino from 'pino';
import { parseServerConfig } from '../src/server/server-config.ts';
import { startServer } from '../src/server/start-server.ts';
import { type AgentProcess, startAgent } from '../test/helpers/agent-process.ts';
import { buildPackages, RUN_TAG, run } from '../test/helpers/nix.ts';
import { cli } from '../test/helpers/server.ts';

const { values } = parseArgs({
  options: { rounds: { type: 'string', default: '5' }, agents: { type: 'string', default: '1,20' } },
});
const rounds = Number(values.rounds);
const sizes = values.agents.split(',').map(Number);
const maxAgents = Math.max(...sizes);

const work = await mkdtemp(join(tmpdir(), 'cairn-bench-deploy-'));
const shim = join(work, 'shim');
await mkdir(shim);
for (const tool of ['nix', 'nix-store', 'nix-env']) {
  const real = (await run('sh', ['-c', `command -v ${tool}`])).trim();
  await writeFile(
    join(shim, tool),
    `#!/bin/sh\ns=$(date +%s%N)\n${real} "$@"\nrc=$?\necho "$s $(date +%s%N)" >> "$CAIRN_BENCH_NIX_LOG"\nexit $rc\n`,
  );
  await chmod(join(shim, tool), 0o755);
}

const server = await startServer(
  parseServerConfig({ listen: '127.0.0.1:0', dataDir: join(work, 'server'), logLevel: 'silent' }, {}),
  {
    log: pino({ level: 'silent' }),
  },
);
const env = {
  CAIRN_SERVER: server.url,
  CAIRN_TOKEN: (await readFile(join(work, 'server', 'admin-token'), 'utf8')).trim(),
};
await cli(['cache', 'create', 'main'], env);
const paths = await buildPackages([{ name: `noop-${RUN_TAG}`, script: 'mkdir $out' }]);
const noop = paths.get(`noop-${RUN_TAG}`)!;
await cli(['push', 'main', noop], env);

const agents: Array<{ name: string; log: string; proc: AgentProcess }> = [];
for (let i = 0; i < maxAgents; i++) {
  const name = `bench${i}`;
  const token = (await cli(['agent', 'create', name], env)).stdout.trim();
  const log = join(work, `${name}.nixlog`);
  process.env.CAIRN_BENCH_NIX_LOG = log;
  process.env.PATH = `${shim}:${process.env.PATH}`;
  const proc = await startAgent({
    name,
    token,
    server: server.url,
    profile: join(work, 'profiles', name),
    stateDir: join(work, name),
  });
  agents.push({ name, log, proc });
}
await Promise.all(agents.map((a) => a.proc.waitFor(/connected to/, 60_000)));

/** Nix time (ms) of one agent between two instants (ns). */
async function nixMs(log: string, fromNs: bigint, toNs: bigint): Promise<number> {
  const text = await readFile(log, 'utf8').catch(() => '');
  let total = 0n;
  for (const line of text.trim().split('\n')) {
    const [s, e] = line.split(' ').map((x) => BigInt(x || '0'));
    if (s !== undefined && e !== undefined && s >= fromNs && e <= toNs) total += e - s;
  }
  return Number(total / 1_000_000n);
}

const headers = { Authorization: `Bearer ${env.CAIRN_TOKEN}`, 'Content-Type': 'application/json' };
/** CPU time (ms) a process has used so far, from /proc (user + system). */
async function cpuMs(pid: number): Promise<number> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return ((Number(fields[11]) + Number(fields[12])) * 1000) / 100;
}
const cairnCpuMs = async () => {
  const self = process.cpuUsage();
  const agentsCpu = await Promise.all(agents.map((a) => cpuMs(a.proc.child.pid!)));
  return (self.user + self.system) / 1000 + agentsCpu.reduce((x, y) => x + y, 0);
};

const results: Record<
  string,
  {
    totalMs: number;
    nixMsPerDeployment: number;
    overheadMsPerDeployment: number;
    cairnCpuMsPerDeployment: number;
  }
> = {};
for (const n of sizes) {
  const samples: Array<{ total: number; nix: number; overhead: number; cpu: number }> = [];
  for (let r = 0; r < rounds + 1; r++) {
    const chosen = agents.slice(0, n);
    const fromNs = BigInt(Date.now()) * 1_000_000n;
    const cpu0 = await cairnCpuMs();
    const t0 = performance.now();
    const res = await fetch(`${server.url}/api/v1/workspaces/default/rollouts`, {
      method: 'POST',
      headers,
      body: JSON.stringify({ agents: Object.fromEntries(chosen.map((a) => [a.name, noop])) }),
    });
    const rollout = (await res.json()) as { id: number };
    // Follow the rollout's events until `end`: the same path `deploy activate` takes.
    const events = await fetch(`${server.url}/api/v1/workspaces/default/rollouts/${rollout.id}/events`, {
      headers,
    });
    const finished = new Map<string, number>();
    const reader = events.body!.getReader();
    let buffer = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += Buffer.from(value).toString();
      for (const m of buffer.matchAll(/event: state\ndata: (.*)\n/g)) {
        const e = JSON.parse(m[1]!) as { agent: string; state: string };
        if (e.state === 'succeeded' && !finished.has(e.agent)) finished.set(e.agent, performance.now() - t0);
        if (e.state === 'failed' || e.state === 'rolled-back') throw new Error(`${e.agent}: ${e.state}`);
      }
      if (buffer.includes('event: end')) break;
    }
    const total = performance.now() - t0;
    const cpu = (await cairnCpuMs()) - cpu0;
    const toNs = BigInt(Date.now()) * 1_000_000n + 1_000_000n;
    const perAgent = await Promise.all(
      chosen.map(async (a) => {
        const nix = await nixMs(a.log, fromNs, toNs);
        return { nix, overhead: (finished.get(a.name) ?? total) - nix };
      }),
    );
    if (r === 0) continue; // warm-up
    const mean = (xs: number[]) => xs.reduce((x, y) => x + y, 0) / xs.length;
    samples.push({
      total,
      nix: mean(perAgent.map((p) => p.nix)),
      overhead: mean(perAgent.map((p) => p.overhead)),
      cpu: cpu / n,
    });
  }
  const median = (xs: number[]) => xs.sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
  results[`agents_${n}`] = {
    totalMs: Math.round(median(samples.map((s) => s.total))),
    nixMsPerDeployment: Math.round(median(samples.map((s) => s.nix))),
    overheadMsPerDeployment: Math.round(median(samples.map((s) => s.overhead))),
    cairnCpuMsPerDeployment: Math.round(median(samples.map((s) => s.cpu))),
  };
  const r = results[`agents_${n}`]!;
  console.log(
    `${String(n).padStart(3)} agent(s): activate -> all succeeded ${r.totalMs} ms; per deployment: nix ${r.nixMsPerDeployment} ms, Cairn ${r.overheadMsPerDeployment} ms wall (target < 150 ms), Cairn CPU ${r.cairnCpuMsPerDeployment} ms [median of ${rounds}]`,
  );
}

await Promise.all(agents.map((a) => a.proc.stop()));
await server.close();
await rm(work, { recursive: true, force: true });
console.log(JSON.stringify({ bench: 'deploy', rounds, ...results }));
