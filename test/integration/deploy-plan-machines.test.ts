import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync } from 'node:fs';
import { mkdtemp, readdir, readFile, readlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { before, describe, it } from 'node:test';
import { rolloutPlanSchema } from '../../src/protocol/api-schemas.ts';
import { helloAgentSocket } from '../helpers/agent-hello.ts';
import {
  darwinPackage,
  nixosPackage,
  plainSystem,
  profileTarget,
  sizedPackage,
  writeDeployJson,
} from '../helpers/deploy-fixtures.ts';
import { useDeployTestbed } from '../helpers/deploy-testbed.ts';
import { RUN_TAG, run } from '../helpers/nix.ts';
import { cli } from '../helpers/server.ts';

/** The generations of a profile: its `<name>-<n>-link` links. */
async function generations(profile: string): Promise<string[]> {
  const name = basename(profile);
  return (await readdir(dirname(profile))).filter((f) => new RegExp(`^${name}-\\d+-link$`).test(f)).sort();
}

describe('deploy plan asks the machines themselves', () => {
  const bed = useDeployTestbed();
  let paths: Map<string, string>;
  const record = join(tmpdir(), `cairn-plan-record-${RUN_TAG}`);
  // The link NixOS points at the system it runs (CAIRN_AGENT_CURRENT_SYSTEM).
  const current = join(tmpdir(), `cairn-plan-current-system-${RUN_TAG}`);
  // What the systems' `kernel` links point to: nixos-b has a new kernel.
  const kernel = join(tmpdir(), `cairn-plan-kernel-${RUN_TAG}`);
  const deployFile = (agents: Record<string, string>) => writeDeployJson(bed.world.profiles, { agents });
  const plan = async (agents: Record<string, string>, flags: string[] = []) => {
    const r = await cli(['deploy', 'plan', '--json', ...flags, await deployFile(agents)], bed.world.env);
    return { r, plan: rolloutPlanSchema.parse(JSON.parse(r.stdout)) };
  };
  const activate = async (agent: string, storePath: string) => {
    const r = await cli(['deploy', 'activate', await deployFile({ [agent]: storePath })], bed.world.env);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    const list = await cli(['deploy', 'list', '--agent', agent, '--json'], bed.world.env);
    activated = r.stdout;
    return (JSON.parse(list.stdout) as Array<{ id: number }>)[0]!.id;
  };
  /** The output of the last `activate`. */
  let activated = '';
  /** A closure's size as `nix path-info -S` gives it. */
  const closureSize = async (root: string) =>
    Number((await run('nix', ['path-info', '-S', root])).trim().split(/\s+/)[1]);
  const kib = (n: number) => `${(n / 1024).toFixed(1)} KiB`;

  before(async () => {
    await writeFile(`${kernel}-1`, 'old kernel');
    await writeFile(`${kernel}-2`, 'new kernel');
    paths = await bed.world.publish([
      sizedPackage('base-1.0', 4),
      sizedPackage('kept-1.0', 8),
      sizedPackage('fresh-1.0', 16),
      plainSystem('sys-1', ['base-1.0']),
      plainSystem('sys-2', ['base-1.0', 'kept-1.0', 'fresh-1.0']),
      nixosPackage('nixos-a', record, { currentSystem: current, kernel: `${kernel}-1` }),
      nixosPackage('nixos-b', record, {
        kernel: `${kernel}-2`,
        currentSystem: current,
        dryActivate: [
          'would stop the following units: old.service',
          'would activate the configuration...',
          'would restart systemd',
          'would restart the following units: nginx.service, sshd.service',
          'would start the following units: new.service',
        ],
      }),
      darwinPackage('darwin-a', record),
    ]);
  });

  it("lists exactly the paths the following deployment fetches, as its log shows, not the server's upper bound", async () => {
    await bed.agent('box');
    await activate('box', paths.get('sys-1')!);
    // The machine holds kept-1.0 though its closure does not: the server cannot know that.
    const cache = `${bed.server.url}/cache/main`;
    const netrc = join(await mkdtemp(join(tmpdir(), 'cairn-netrc-')), 'netrc');
    await writeFile(netrc, `machine 127.0.0.1\nlogin cairn\npassword ${bed.server.adminToken}\n`);
    await run('nix-store', [
      '--option',
      'netrc-file',
      netrc,
      '--realise',
      paths.get('kept-1.0')!,
      '--option',
      'extra-substituters',
      cache,
      '--option',
      'extra-trusted-public-keys',
      bed.world.publicKey,
    ]);
    const { r, plan: p } = await plan({ box: paths.get('sys-2')! });
    assert.equal(r.code, 0, r.stderr);
    const box = p.agents[0]!;
    assert.equal(box.download.paths, 3, 'the server estimates kept, fresh and sys-2');
    assert.equal(box.machine?.status, 'answered', box.machine?.message);
    const planned = box.machine!.download!.paths.map((d) => d.path).sort();
    assert.deepEqual(planned, [paths.get('fresh-1.0')!, paths.get('sys-2')!].sort());
    for (const d of box.machine!.download!.paths) {
      assert.ok(d.narSize !== null && d.narSize > 0, `a size for ${d.path}`);
      assert.ok(d.fileSize !== null && d.fileSize > 0, `a compressed size for ${d.path}`);
    }
    assert.equal(box.machine!.diskOk, true);
    assert.ok((box.machine!.freeBytes ?? 0) > 0);

    const text = await cli(['deploy', 'plan', await deployFile({ box: paths.get('sys-2')! })], bed.world.env);
    assert.equal(text.code, 0, text.stderr);
    assert.match(
      text.stdout,
      /^Download: 2 path\(s\), .* unpacked, .* compressed \(the machine's own count\)$/m,
    );
    assert.match(text.stdout, /^Disk: .* free on \/nix\/store$/m);

    const id = await activate('box', paths.get('sys-2')!);
    const logs = await cli(['deploy', 'logs', String(id)], bed.world.env);
    const fetched = [...logs.stdout.matchAll(/copying path '(\/nix\/store\/[^']+)'/g)]
      .map((m) => m[1]!)
      .sort();
    assert.deepEqual(fetched, planned, logs.stdout);

    // The summary: the new closure's size and its change from the one the agent ran.
    const [before, after] = [await closureSize(paths.get('sys-1')!), await closureSize(paths.get('sys-2')!)];
    assert.ok(after > before + 20 * 1024);
    assert.match(activated, /^AGENT\s+STATUS\s+DURATION\s+CLOSURE\s+STORE PATH/m);
    const row = `^box\\s+succeeded\\s+\\S+\\s+${kib(after)} \\(\\+${kib(after - before)}\\)\\s+${paths.get('sys-2')}`;
    assert.match(activated, new RegExp(row, 'm'));
  });

  it('dry-activates a NixOS closure: the units it would restart, and nothing changed on the machine', async () => {
    const stateDir = await mkdtemp(join(tmpdir(), 'cairn-agent-'));
    // The machine booted what it runs: nixos-a, once deployed.
    await bed.agent('nix1', {
      stateDir,
      env: { CAIRN_AGENT_CURRENT_SYSTEM: current, CAIRN_AGENT_BOOTED_SYSTEM: current },
    });
    await activate('nix1', paths.get('nixos-a')!);
    const profile = join(bed.world.profiles, 'nix1');
    const gensBefore = await generations(profile);
    assert.equal(await readlink(current), paths.get('nixos-a'));

    const { r, plan: p } = await plan({ nix1: paths.get('nixos-b')! }, [
      '--dry-activate',
      '--timeout',
      '60s',
    ]);
    assert.equal(r.code, 0, r.stderr);
    const m = p.agents[0]!.machine!;
    assert.equal(m.status, 'answered', m.message);
    assert.equal(m.kind, 'nixos');
    assert.deepEqual(m.dryActivate, {
      status: 'done',
      stop: ['old.service'],
      restart: ['nginx.service', 'sshd.service'],
      start: ['new.service'],
      reload: [],
      rebootRequired: true,
      notes: ['would activate the configuration...', 'would restart systemd'],
    });

    assert.equal(await profileTarget(profile), paths.get('nixos-a'), 'the profile is unchanged');
    assert.deepEqual(await generations(profile), gensBefore, 'no new generation');
    assert.equal(await readlink(current), paths.get('nixos-a'), 'the running system is unchanged');
    const runs = (await readFile(record, 'utf8'))
      .split('\n')
      .filter((l) => l.startsWith(paths.get('nixos-b')!));
    assert.deepEqual(runs, [`${paths.get('nixos-b')} dry-activate`]);
    // Fetched for the dry-activate, and rooted by nothing of the agent's any more.
    assert.ok(existsSync(join(paths.get('nixos-b')!, 'bin/switch-to-configuration')));
    const roots = await readdir(join(stateDir, 'gcroots'));
    assert.deepEqual(
      roots.filter((f) => f.startsWith('plan-')),
      [],
      'the temporary GC root is gone',
    );
    for (const f of roots)
      assert.notEqual(await readlink(join(stateDir, 'gcroots', f)), paths.get('nixos-b'));

    const text = await cli(
      ['deploy', 'plan', '--dry-activate', await deployFile({ nix1: paths.get('nixos-b')! })],
      bed.world.env,
    );
    assert.match(
      text.stdout,
      /^Dry-activate: would stop old\.service; would restart nginx\.service, sshd\.service; would start new\.service; reboot required \(new kernel, initrd or init system\)$/m,
    );
  });

  it('says per agent that nix-darwin has no dry-activate, with its download', async () => {
    await bed.agent('mac1');
    const { r, plan: p } = await plan({ mac1: paths.get('darwin-a')! }, [
      '--dry-activate',
      '--timeout',
      '60s',
    ]);
    assert.equal(r.code, 0, r.stderr);
    const m = p.agents[0]!.machine!;
    assert.equal(m.kind, 'nix-darwin');
    assert.deepEqual(m.dryActivate, {
      status: 'unsupported',
      reason: 'no dry-activate: nix-darwin has none',
    });
    assert.deepEqual(
      m.download?.paths.map((d) => d.path),
      [paths.get('darwin-a')],
    );
  });

  it('gives a line per agent that is too old, offline or silent, and still plans the others (exit 3)', async () => {
    const oldToken = await bed.world.createAgent('old1');
    const silentToken = await bed.world.createAgent('silent1');
    await bed.world.createAgent('gone1');
    const old = await helloAgentSocket(bed.server.url, 'old1', oldToken, { protocol: 1 });
    await old.next('welcome');
    const silent = await helloAgentSocket(bed.server.url, 'silent1', silentToken);
    await silent.next('welcome');
    try {
      const target = paths.get('sys-1')!;
      const agents = { old1: target, silent1: target, gone1: target, box: paths.get('sys-2')! };
      const started = Date.now();
      const file = await deployFile(agents);
      const json = await cli(['deploy', 'plan', '--json', '--timeout', '3s', file], bed.world.env);
      assert.equal(json.code, 3, json.stderr);
      assert.ok(Date.now() - started < 20_000);
      const byAgent = new Map(
        rolloutPlanSchema.parse(JSON.parse(json.stdout)).agents.map((a) => [a.agent, a]),
      );
      assert.equal(byAgent.get('old1')?.machine?.status, 'unsupported');
      assert.equal(byAgent.get('silent1')?.machine?.status, 'timeout');
      assert.equal(byAgent.get('gone1')?.machine?.status, 'offline');
      assert.equal(byAgent.get('box')?.machine?.status, 'unchanged');
      // The silent agent was asked; the one too old was not.
      const asked = await silent.next('plan');
      assert.equal(asked.storePath, target);

      const text = await cli(['deploy', 'plan', '--timeout', '2s', file], bed.world.env);
      assert.equal(text.code, 3);
      assert.match(
        text.stdout,
        /== old1\n[\s\S]*?^Machine: its agent \(protocol 1\) cannot plan: upgrade it/m,
      );
      assert.match(text.stdout, /== silent1\n[\s\S]*?^Machine: no answer within 2s \(--timeout\)/m);
      assert.match(
        text.stdout,
        /== gone1\n[\s\S]*?^Machine: offline: not asked; the server-side estimate stands$/m,
      );
      assert.match(
        text.stdout,
        /== gone1\n[\s\S]*?^Download: 2 path\(s\), .* \(server-side estimate, an upper bound\)$/m,
      );
      assert.match(text.stdout, /== box\nalready runs/);
    } finally {
      old.ws.close();
      silent.ws.close();
    }
  });

  it('lists a path no cache has, which the deployment would fail on (exit 1)', async () => {
    const nowhere = '/nix/store/00000000000000000000000000000000-nowhere-1.0';
    const { r, plan: p } = await plan({ box: nowhere });
    assert.equal(r.code, 1, r.stderr);
    const m = p.agents[0]!.machine!;
    assert.equal(m.status, 'answered', m.message);
    assert.deepEqual(m.unavailable, [nowhere]);
    const text = await cli(['deploy', 'plan', await deployFile({ box: nowhere })], bed.world.env);
    assert.equal(text.code, 1);
    assert.match(
      text.stdout,
      new RegExp(`^In no cache \\(the deployment would fail\\): 1 path\\(s\\)\n  ${nowhere}$`, 'm'),
    );
  });

  it('refuses a bad --timeout before asking anything, and a bad query on the API', async () => {
    const file = await deployFile({ box: paths.get('sys-1')! });
    const r = await cli(['deploy', 'plan', '--timeout', '10h', file], bed.world.env);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /Cannot use --timeout: a plan waits at most 4m30s \(10h\)/);
    const res = await fetch(`${bed.server.url}/api/v1/workspaces/default/plan?timeout=soon`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${bed.server.adminToken}`, 'Content-Type': 'application/json' },
      body: JSON.stringify({ agents: { box: paths.get('sys-1') } }),
    });
    assert.equal(res.status, 400);
    const body = (await res.json()) as { code: string; validations?: Array<{ field: string }> };
    assert.equal(body.code, 'INVALID_ARGUMENT');
    assert.equal(body.validations?.[0]?.field, 'timeout');
    assert.ok(existsSync(file));
  });

  const deploymentCount = async (agent: string) => {
    const list = await cli(['deploy', 'list', '--agent', agent, '--json'], bed.world.env);
    return (JSON.parse(list.stdout) as unknown[]).length;
  };

  it('deploy activate --plan refuses without a terminal and without --yes, creating nothing', async () => {
    const before = await deploymentCount('box');
    const r = await cli(
      ['deploy', 'activate', '--plan', await deployFile({ box: paths.get('sys-1')! })],
      bed.world.env,
    );
    assert.equal(r.code, 2);
    assert.match(r.stderr, /Cannot confirm the plan: stdin is not a terminal; pass --yes/);
    assert.equal(r.stdout, '');
    assert.equal(await deploymentCount('box'), before);
  });

  it('deploy activate --plan --yes prints the plan, then activates without asking', async () => {
    const before = await deploymentCount('box');
    const r = await cli(
      ['deploy', 'activate', '--plan', '--yes', await deployFile({ box: paths.get('sys-1')! })],
      bed.world.env,
    );
    assert.equal(r.code, 0, r.stdout + r.stderr);
    const plan = r.stdout.indexOf('== box\n');
    assert.ok(plan >= 0, r.stdout);
    assert.match(r.stdout, /^Download: 0 path\(s\) \(the machine's own count\)$/m);
    assert.ok(plan < r.stdout.indexOf('box | '), 'the plan comes before the logs');
    assert.equal(await deploymentCount('box'), before + 1);
  });

  it('deploy activate --plan on a terminal asks, and an answer other than y activates nothing', async () => {
    const before = await deploymentCount('box');
    const file = await deployFile({ box: paths.get('sys-2')! });
    const main = join(import.meta.dirname, '../../src/main.ts');
    const command = `${process.execPath} --import tsx ${main} deploy activate --plan ${file}`;
    // script(1) gives the CLI a terminal; the answer is typed into it once the question shows.
    const child = spawn('script', ['-qec', command, '/dev/null'], {
      env: { ...process.env, ...bed.world.env },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let text = '';
    child.stdout.on('data', (d: Buffer) => {
      text += d.toString();
      if (text.includes('Activate this plan? [y/N]') && child.stdin.writable) child.stdin.write('n\n');
    });
    const [code] = (await once(child, 'exit')) as [number];
    assert.match(text, /== box/);
    assert.match(text, /Activate this plan\? \[y\/N\]/);
    assert.match(text, /cairn: not activated/);
    assert.equal(code, 1, text);
    assert.equal(await deploymentCount('box'), before);
  });
});
