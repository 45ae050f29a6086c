import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';
import { sql } from 'kysely';
import { deploymentDiffSchema, rolloutPlanSchema } from '../../src/protocol/api-schemas.ts';
import { plainSystem, sizedPackage, writeDeployJson } from '../helpers/deploy-fixtures.ts';
import { useDeployTestbed } from '../helpers/deploy-testbed.ts';
import { run } from '../helpers/nix.ts';
import { cli } from '../helpers/server.ts';

describe('closure reports, diffs and plans on real Nix closures', () => {
  const bed = useDeployTestbed();
  let paths: Map<string, string>;
  const ids: Record<string, number> = {};
  const api = async (method: string, path: string, body?: unknown) => {
    const res = await fetch(`${bed.server.url}/api/v1/workspaces/default/${path}`, {
      method,
      headers: { Authorization: `Bearer ${bed.server.adminToken}`, 'Content-Type': 'application/json' },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
    assert.equal(res.status, 200, await res.clone().text());
    return (await res.json()) as unknown;
  };
  const deployFile = (agents: Record<string, string>) => writeDeployJson(bed.world.profiles, { agents });
  const activate = async (storePath: string) => {
    const r = await cli(['deploy', 'activate', await deployFile({ box: storePath })], bed.world.env);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    const list = await cli(['deploy', 'list', '--agent', 'box', '--json'], bed.world.env);
    return (JSON.parse(list.stdout) as Array<{ id: number }>)[0]!.id;
  };

  before(async () => {
    paths = await bed.world.publish([
      sizedPackage('common-2.0', 4),
      sizedPackage('hello-1.0', 8),
      sizedPackage('hello-1.1', 12),
      sizedPackage('libold-0.5', 16),
      sizedPackage('libnew-3.0', 64),
      plainSystem('sys-1', ['common-2.0', 'hello-1.0', 'libold-0.5']),
      plainSystem('sys-2', ['common-2.0', 'hello-1.1', 'libnew-3.0']),
    ]);
    await bed.agent('box');
  });

  it('plans a first deployment from the cache index: everything is added and downloaded', async () => {
    const plan = rolloutPlanSchema.parse(await api('POST', 'plan', { agents: { box: paths.get('sys-1') } }));
    const box = plan.agents[0]!;
    assert.equal(box.current.storePath, null);
    assert.equal(box.proposed.source, 'cache');
    assert.equal(box.proposed.missing, 0);
    assert.equal(box.download.paths, 4);
    assert.equal(box.download.filePaths, 4);
    assert.deepEqual(box.diff.packages.map((p) => `${p.change} ${p.pname}`).sort(), [
      'added common',
      'added hello',
      'added libold',
      'added sys',
    ]);
  });

  it('records the closure an agent reports after realising, with the sizes nix path-info gives', async () => {
    ids.first = await activate(paths.get('sys-1')!);
    // Nix's own figures, not read through Cairn's path-info parser (the agent's): the closure's
    // paths as nix-store lists them, and its size as nix path-info -S sums it.
    const root = paths.get('sys-1')!;
    const requisites = (await run('nix-store', ['--query', '--requisites', root])).trim().split('\n');
    const sized = /^(\/nix\/store\/\S+)\s+(\d+)$/.exec((await run('nix', ['path-info', '-S', root])).trim());
    assert.ok(sized && sized[1] === root, `nix path-info -S printed ${sized?.[0]}`);
    const closureSize = Number(sized[2]);
    assert.equal(requisites.length, 4, requisites.join(' ')); // sys-1 and its three packages
    const rows = await bed.server.query<{ complete: number; path_count: number; nar_size: number }>(
      sql`select complete, path_count, nar_size from closures where root = ${root}`,
    );
    assert.equal(rows.length, 1);
    assert.equal(Number(rows[0]!.complete), 1);
    assert.equal(Number(rows[0]!.path_count), requisites.length);
    assert.equal(Number(rows[0]!.nar_size), closureSize);
    const [d] = await bed.server.query<{ closure_nar_size: number }>(
      sql`select closure_nar_size from deployments where id = ${ids.first}`,
    );
    assert.equal(Number(d!.closure_nar_size), Number(rows[0]!.nar_size));
  });

  it('plans the next deployment against what the agent runs: the diff and only the new paths to download', async () => {
    const r = await cli(['deploy', 'plan', await deployFile({ box: paths.get('sys-2')! })], bed.world.env);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^== box$/m);
    assert.match(r.stdout, /\[U\.\]\s+#1\s+hello\s+1\.0 -> 1\.1/);
    assert.match(r.stdout, /\[A\.\]\s+#1\s+libnew\s+3\.0/);
    assert.match(r.stdout, /\[R\.\]\s+#1\s+libold\s+0\.5/);
    assert.match(r.stdout, /Download: 3 path\(s\)/);
    const plan = rolloutPlanSchema.parse(await api('POST', 'plan', { agents: { box: paths.get('sys-2') } }));
    // The caches hold the whole closure (verified on upload), so they win over the agent's report.
    assert.equal(plan.agents[0]!.current.source, 'cache');
    assert.equal(plan.agents[0]!.current.missing, 0);
    // Nothing was deployed by planning.
    const list = await cli(['deploy', 'list', '--agent', 'box', '--json'], bed.world.env);
    assert.equal((JSON.parse(list.stdout) as unknown[]).length, 1);
  });

  it('diffs two deployments: a version change, an added and a removed package, and the size change', async () => {
    ids.second = await activate(paths.get('sys-2')!);
    const r = await cli(['deploy', 'diff', String(ids.first), String(ids.second)], bed.world.env);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stderr, '');
    const lines = r.stdout.split('\n');
    assert.equal(lines[0], `<<< #${ids.first} ${paths.get('sys-1')}`);
    assert.equal(lines[1], `>>> #${ids.second} ${paths.get('sys-2')}`);
    assert.match(r.stdout, /Version changes:\n\[U\.\]\s+#1\s+hello\s+1\.0 -> 1\.1, \+4\.0KiB/);
    assert.match(r.stdout, /Added packages:\n\[A\.\]\s+#1\s+libnew\s+3\.0, \+64\.\dKiB/);
    assert.match(r.stdout, /Removed packages:\n\[R\.\]\s+#1\s+libold\s+0\.5, -16\.\dKiB/);
    assert.match(
      r.stdout,
      /Closure size: 4 -> 4 \(3 paths added, 3 paths removed, delta \+0, disk usage \+\d/,
    );

    const json = deploymentDiffSchema.parse(
      await api('GET', `deployments/diff?from=${ids.first}&to=${ids.second}`),
    );
    // Both closures are whole in the caches: their verified data, not the agent's report.
    assert.equal(json.from.source, 'cache');
    assert.equal(json.to.source, 'cache');
    const hello = json.diff.packages.find((p) => p.pname === 'hello')!;
    assert.equal(hello.change, 'upgraded');
    assert.deepEqual([hello.before.versions, hello.after.versions], [['1.0'], ['1.1']]);
    assert.equal(json.diff.packages.find((p) => p.pname === 'libnew')?.change, 'added');
    assert.equal(json.diff.packages.find((p) => p.pname === 'libold')?.change, 'removed');
    assert.ok(json.diff.narSizeDelta > 40 * 1024);
  });

  it('stores each path and each closure once however often it is deployed', async () => {
    const rb = await cli(['deploy', 'rollback', 'box'], bed.world.env);
    assert.equal(rb.code, 0, rb.stdout + rb.stderr);
    const closures = await bed.server.query<{ n: number }>(sql`select count(*) as n from closures`);
    assert.equal(Number(closures[0]!.n), 2);
    const members = await bed.server.query<{ n: number }>(sql`select count(*) as n from closure_members`);
    assert.equal(Number(members[0]!.n), 8);
    const distinct = await bed.server.query<{ n: number }>(sql`select count(*) as n from closure_paths`);
    assert.equal(Number(distinct[0]!.n), 7);
    const sized = await bed.server.query<{ n: number }>(
      sql`select count(*) as n from deployments where closure_nar_size is not null`,
    );
    assert.equal(Number(sized[0]!.n), 3);
  });

  it('lists, shows and prints the logs of deployments', async () => {
    const list = await cli(['deploy', 'list', '--agent', 'box'], bed.world.env);
    assert.equal(list.code, 0, list.stderr);
    assert.match(list.stdout, /^ID\s+ROLLOUT\s+AGENT\s+KIND\s+STATE/);
    assert.equal(list.stdout.trim().split('\n').length, 4);
    assert.match(list.stdout, /box\s+rollback\s+succeeded/);
    const show = await cli(['deploy', 'show', String(ids.second)], bed.world.env);
    assert.equal(show.code, 0, show.stderr);
    assert.match(show.stdout, /^State:\s+succeeded$/m);
    assert.match(show.stdout, new RegExp(`^Store path:\\s+${paths.get('sys-2')}$`, 'm'));
    const logs = await cli(['deploy', 'logs', '--follow', String(ids.second)], bed.world.env);
    assert.equal(logs.code, 0, logs.stderr);
    assert.match(logs.stdout, /^activated sys-2$/m);
    const missing = await cli(['deploy', 'show', '99999'], bed.world.env);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /Cannot find deployment '99999'/);
  });

  it('records the size on every deployment of a fleet reporting a known closure at once', async () => {
    // Three more machines take sys-2 in one rollout: their reports of a closure the server
    // already holds arrive together and are answered from what it remembers, one size update
    // for all of them.
    const fleet = ['m1', 'm2', 'm3'];
    for (const name of fleet) await bed.agent(name);
    const r = await bed.activate({ agents: Object.fromEntries(fleet.map((n) => [n, paths.get('sys-2')!])) });
    assert.equal(r.code, 0, r.stdout + r.stderr);
    const rows = await bed.server.query<{ name: string; closure_nar_size: number | null }>(
      sql`select a.name, d.closure_nar_size from deployments d join agents a on a.id = d.agent_id
          where a.name in ('m1', 'm2', 'm3') order by a.name`,
    );
    const second = await bed.server.query<{ closure_nar_size: number }>(
      sql`select closure_nar_size from deployments where id = ${ids.second}`,
    );
    assert.deepEqual(
      rows.map((x) => [x.name, Number(x.closure_nar_size)]),
      fleet.map((n) => [n, Number(second[0]!.closure_nar_size)]),
    );
    assert.ok(Number(second[0]!.closure_nar_size) > 64 * 1024);
  });
});
