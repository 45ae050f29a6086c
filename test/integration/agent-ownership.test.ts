import assert from 'node:assert/strict';
import { once } from 'node:events';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { sql } from 'kysely';
import { type AgentProcess, startAgent } from '../helpers/agent-process.ts';
import {
  type DeployWorld,
  deployWorld,
  nixosPackage,
  plainPackage,
  profileTarget,
  writeDeployJson,
} from '../helpers/deploy-fixtures.ts';
import { RUN_TAG } from '../helpers/nix.ts';
import { cli, startTestServer, type TestServer } from '../helpers/server.ts';

/**
 * Issue #14: an agent's state belongs to that agent and that server. Real servers, real agent
 * processes, the real nix. The agents of the first test run with the default state dir, as root
 * (as the agent is deployed; these tests run as root): /var/lib/cairn-agent/NAME, with names
 * unique to the run, removed afterwards. The others give each agent a temporary --state-dir,
 * which a restarted agent is given again, as a service would be.
 */
describe('an agent owns nothing it cannot name', () => {
  const cleanup: Array<() => Promise<unknown>> = [];
  after(async () => {
    for (const c of cleanup.reverse()) await c().catch(() => {});
  });
  const track = (a: AgentProcess) => {
    cleanup.push(() => a.stop());
    return a;
  };
  const newServer = async (): Promise<{ server: TestServer; world: DeployWorld }> => {
    const server = await startTestServer();
    cleanup.push(() => server.stop());
    return { server, world: await deployWorld(server) };
  };
  const killer = (marker: string, name: string) =>
    `if [ ! -e ${marker} ]; then touch ${marker}; pkill -9 -f "deploy agent ${name} "; sleep 2; fi; echo survived`;
  const killedWithin = (a: AgentProcess, ms: number) =>
    Promise.race([
      once(a.child, 'exit'),
      new Promise((_, reject) =>
        setTimeout(() => reject(new Error(`agent was not killed:\n${a.lines.join('\n')}`)), ms),
      ),
    ]);
  const journalOf = async (stateDir: string) =>
    JSON.parse(await readFile(join(stateDir, 'journal.json'), 'utf8')) as {
      version: number;
      owner: { serverId: string | null; workspace: string | null; agent: string };
      deployment: { id: string; storePath: string };
      phase: string;
      reported: boolean;
    };

  it('runs two agents with the default state dir side by side, each with its own journal, even when one is killed mid-activation', async () => {
    const { world } = await newServer();
    const sys = `sys-${RUN_TAG}`;
    const hm = `hm-${RUN_TAG}`;
    const dirs = { [sys]: join('/var/lib/cairn-agent', sys), [hm]: join('/var/lib/cairn-agent', hm) };
    for (const dir of Object.values(dirs)) cleanup.push(() => rm(dir, { recursive: true, force: true }));
    const marker = join(await mkdtemp(join(tmpdir(), 'cairn-own-')), 'killed');
    const record = join(world.profiles, 'switches');
    const paths = await world.publish([
      nixosPackage(`own-sys-1-${RUN_TAG}`, record),
      plainPackage(`own-hm-1-${RUN_TAG}`),
      {
        name: `own-sys-2-${RUN_TAG}`,
        script: [
          'mkdir -p $out/bin',
          'echo 24.05 > $out/nixos-version',
          `printf '#!/bin/sh\\n${killer(marker, sys)}\\n' > $out/bin/switch-to-configuration`,
          'chmod +x $out/bin/switch-to-configuration',
        ].join('; '),
      },
      plainPackage(`own-hm-2-${RUN_TAG}`),
    ]);
    // A system-style profile (NixOS kind) and a Home-Manager-style one, as Cachix Deploy suggests.
    const profiles = { [sys]: join(world.profiles, 'system'), [hm]: join(world.profiles, 'home-manager') };
    const tokens = { [sys]: await world.createAgent(sys), [hm]: await world.createAgent(hm) };
    const start = async (name: string) => {
      const a = track(
        await startAgent({
          name,
          token: tokens[name]!,
          profile: profiles[name]!,
          server: world.env.CAIRN_SERVER!,
          stateDir: null,
        }),
      );
      await a.waitFor(/connected to/);
      return a;
    };
    let sysAgent = await start(sys);
    await start(hm);

    const first = { [sys]: paths.get(`own-sys-1-${RUN_TAG}`)!, [hm]: paths.get(`own-hm-1-${RUN_TAG}`)! };
    const r1 = await cli(
      ['deploy', 'activate', await writeDeployJson(world.profiles, { agents: first })],
      world.env,
    );
    assert.equal(r1.code, 0, r1.stdout + r1.stderr);
    for (const name of [sys, hm]) {
      assert.equal(await profileTarget(profiles[name]!), first[name]);
      const j = await journalOf(dirs[name]!);
      assert.equal(j.owner.agent, name);
      assert.equal(j.owner.workspace, 'default');
      assert.equal(j.deployment.storePath, first[name]);
      assert.equal(j.phase, 'done');
    }

    // Again, the system agent killed by its own activation: restarted, it finishes its own deployment only.
    const second = { [sys]: paths.get(`own-sys-2-${RUN_TAG}`)!, [hm]: paths.get(`own-hm-2-${RUN_TAG}`)! };
    const f2 = await writeDeployJson(world.profiles, { agents: second });
    const activation = cli(['deploy', 'activate', f2, '--timeout', '90s'], world.env);
    await killedWithin(sysAgent, 30_000);
    assert.equal(sysAgent.child.signalCode, 'SIGKILL');
    sysAgent = await start(sys);
    await sysAgent.waitFor(/was interrupted at activate; finishing it first/);
    const r2 = await activation;
    assert.equal(r2.code, 0, r2.stdout + r2.stderr);
    assert.match(r2.stdout, new RegExp(`${sys}\\s+succeeded`));
    assert.match(r2.stdout, new RegExp(`${hm}\\s+succeeded`));
    for (const name of [sys, hm]) {
      assert.equal(await profileTarget(profiles[name]!), second[name]);
      const j = await journalOf(dirs[name]!);
      assert.equal(j.owner.agent, name);
      assert.equal(j.deployment.storePath, second[name]);
      assert.equal(j.phase, 'done');
      assert.deepEqual(
        (await readdir(dirs[name]!)).filter((f) => f.startsWith('journal.json.')),
        [],
        "nothing was set aside: each journal was its own agent's",
      );
    }
  });

  /**
   * Server A deploys `a` to agent `name`, whose journal then holds A's deployment; B is a fresh
   * server (its own data dir) where the same agent name exists. Returns both, the agent's state
   * dir and profile, A's journal and what B is to deploy.
   */
  const deployedOnA = async (tag: string, aPackage = plainPackage(`own-a-${tag}-${RUN_TAG}`)) => {
    const name = `own-${tag}`;
    const A = await newServer();
    const B = await newServer();
    const stateDir = await mkdtemp(join(tmpdir(), `cairn-agent-${name}-`));
    cleanup.push(() => rm(stateDir, { recursive: true, force: true }));
    const profile = join(A.world.profiles, name);
    const aPath = (await A.world.publish([aPackage])).get(aPackage.name)!;
    const bPath = (await B.world.publish([plainPackage(`own-b-${tag}-${RUN_TAG}`)])).get(
      `own-b-${tag}-${RUN_TAG}`,
    )!;
    const onA = track(
      await startAgent({
        name,
        token: await A.world.createAgent(name),
        profile,
        server: A.server.url,
        stateDir,
      }),
    );
    await onA.waitFor(/connected to/);
    return { name, A, B, stateDir, profile, aPath, bPath, onA, bToken: await B.world.createAgent(name) };
  };

  /** Starts the agent of `t` again, now with B's token and server, on the same state dir and profile. */
  const startOnB = async (t: Awaited<ReturnType<typeof deployedOnA>>) =>
    track(
      await startAgent({
        name: t.name,
        token: t.bToken,
        profile: t.profile,
        server: t.B.server.url,
        stateDir: t.stateDir,
      }),
    );

  /** What B recorded: its deployments and every log line it holds. */
  const recordedOn = async (server: TestServer) => ({
    deployments: await server.query<{ id: number | string; state: string; store_path: string }>(
      sql`select id, state, store_path from deployments order by id`,
    ),
    logs: (await server.query<{ text: string }>(sql`select text from deployment_logs`)).map((r) => r.text),
  });

  const deployOnB = async (t: Awaited<ReturnType<typeof deployedOnA>>) => {
    const r = await cli(
      [
        'deploy',
        'activate',
        await writeDeployJson(t.B.world.profiles, { agents: { [t.name]: t.bPath } }),
        '--timeout',
        '60s',
      ],
      t.B.world.env,
    );
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.equal(await profileTarget(t.profile), t.bPath);
    const b = await recordedOn(t.B.server);
    assert.equal(b.deployments.length, 1);
    assert.equal(String(b.deployments[0]!.id), '1');
    assert.equal(b.deployments[0]!.state, 'succeeded');
    assert.equal(b.deployments[0]!.store_path, t.bPath);
    const aName = t.aPath.slice('/nix/store/'.length + 33);
    // B's own deployment says where the profile pointed before it ("previous: <A's path>").
    assert.deepEqual(
      b.logs.filter((l) => (l.includes(aName) && !l.startsWith('previous: ')) || l.includes('survived')),
      [],
      'nothing of A reached B',
    );
    const j = await journalOf(t.stateDir);
    const [serverId] = await t.B.server.query<{ server_id: string }>(
      sql`select server_id from server_identity`,
    );
    assert.deepEqual(j.owner, { serverId: serverId!.server_id, workspace: 'default', agent: t.name });
    return r;
  };

  it("runs a fresh server's deployment 1 although the journal holds another server's finished, unreported deployment 1", async () => {
    const t = await deployedOnA('done');
    const r = await cli(
      ['deploy', 'activate', await writeDeployJson(t.A.world.profiles, { agents: { [t.name]: t.aPath } })],
      t.A.world.env,
    );
    assert.equal(r.code, 0, r.stdout + r.stderr);
    await t.onA.stop();
    // As if the agent had died between recording the result and the server acknowledging it.
    const journal = await journalOf(t.stateDir);
    assert.equal(journal.deployment.id, '1');
    assert.equal(journal.phase, 'done');
    const [aId] = await t.A.server.query<{ server_id: string }>(sql`select server_id from server_identity`);
    assert.equal(journal.owner.serverId, aId!.server_id);
    await writeFile(join(t.stateDir, 'journal.json'), JSON.stringify({ ...journal, reported: false }));

    const onB = await startOnB(t);
    await onB.waitFor(/connected to/);
    await deployOnB(t);
    await onB.waitFor(
      /WARNING: set the journal aside as .*journal\.json\.foreign-\d+: it is server [0-9a-f]{32}, workspace default's/,
    );
    assert.equal(onB.lines.filter((l) => l.includes('WARNING')).length, 1, onB.lines.join('\n'));
  });

  it("drops another server's deployment that was still downloading, and runs this server's", async () => {
    const t = await deployedOnA('realise');
    const r = await cli(
      ['deploy', 'activate', await writeDeployJson(t.A.world.profiles, { agents: { [t.name]: t.aPath } })],
      t.A.world.env,
    );
    assert.equal(r.code, 0, r.stdout + r.stderr);
    await t.onA.stop();
    // The journal as an agent stopped while downloading leaves it (the kill-during-download test
    // makes one for real; here the download is not what matters).
    const journal = await journalOf(t.stateDir);
    await writeFile(
      join(t.stateDir, 'journal.json'),
      JSON.stringify({
        ...journal,
        phase: 'realise',
        previous: null,
        switched: false,
        result: null,
        reported: false,
      }),
    );
    const onB = await startOnB(t);
    await onB.waitFor(/journal: deployment 1 was interrupted at realise/);
    await deployOnB(t);
    await onB.waitFor(/WARNING: set the journal aside as .*journal\.json\.foreign-\d+/);
    assert.deepEqual(
      onB.lines.filter((l) => /switching/.test(l)),
      [onB.lines.find((l) => l.includes(`switching ${t.profile} to ${t.bPath}`))],
      "A's deployment was not resumed",
    );
  });

  it("finishes another server's switch interrupted mid-activation locally, tells the new server nothing of it, then runs the new server's", async () => {
    const marker = join(await mkdtemp(join(tmpdir(), 'cairn-own-')), 'killed');
    const name = 'own-activate';
    const t = await deployedOnA('activate', {
      name: `own-a-activate-${RUN_TAG}`,
      script: `mkdir -p $out/bin; printf '#!/bin/sh\\n${killer(marker, name)}\\n' > $out/bin/activate; chmod +x $out/bin/activate`,
    });
    const f = await writeDeployJson(t.A.world.profiles, { agents: { [name]: t.aPath } });
    assert.equal((await cli(['deploy', 'activate', f, '--async'], t.A.world.env)).code, 0);
    await killedWithin(t.onA, 30_000);
    assert.equal((await journalOf(t.stateDir)).phase, 'activate');

    const onB = await startOnB(t);
    await onB.waitFor(/was interrupted at activate; finishing it first/);
    await onB.waitFor(
      /WARNING: the journal's deployment 1 is another server's .*finishing it locally, reporting nothing/,
    );
    await onB.waitFor(
      /deployment 1: finished locally; set its journal aside as .*journal\.json\.foreign-\d+/,
      30_000,
    );
    await deployOnB(t);
    // A never heard of the end of its deployment: nothing was reported anywhere.
    const a = await recordedOn(t.A.server);
    assert.notEqual(a.deployments[0]!.state, 'succeeded');
  });

  it('refuses a second agent of the same name on the machine, even with another state dir and profile', async () => {
    const { world } = await newServer();
    const name = 'own-twice';
    const token = await world.createAgent(name);
    const first = track(
      await startAgent({
        name,
        token,
        profile: join(world.profiles, 'one'),
        server: world.env.CAIRN_SERVER!,
      }),
    );
    await first.waitFor(/connected to/);
    const second = track(
      await startAgent({
        name,
        token,
        profile: join(world.profiles, 'two'),
        server: world.env.CAIRN_SERVER!,
      }),
    );
    await second.waitFor(
      new RegExp(
        `Cannot start the agent: another cairn agent named ${name} \\(pid ${first.child.pid}\\) runs on this machine`,
      ),
    );
    const code = second.child.exitCode ?? (await once(second.child, 'exit'))[0];
    assert.equal(code, 1);
    assert.equal(first.child.exitCode, null, 'the first agent runs on');
  });
});
