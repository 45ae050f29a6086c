import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { mkdtemp, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { type AgentProcess, startAgent } from '../helpers/agent-process.ts';
import { signInToDashboard } from '../helpers/dashboard-session.ts';
import { plainPackage, profileTarget, writeDeployJson } from '../helpers/deploy-fixtures.ts';
import { useDeployTestbed } from '../helpers/deploy-testbed.ts';
import { RUN_TAG } from '../helpers/nix.ts';
import { adminApi, cli } from '../helpers/server.ts';

describe('enrolment tokens', () => {
  const bed = useDeployTestbed();
  const started: AgentProcess[] = [];

  /** Starts `cairn deploy agent NAME --enrol` with the enrolment token in CAIRN_ENROL_TOKEN. */
  const enrolAgent = async (name: string, enrolToken: string, stateDir?: string) => {
    const a = await startAgent({
      name,
      profile: join(bed.world.profiles, name),
      server: bed.server.url,
      args: ['--enrol'],
      env: { CAIRN_ENROL_TOKEN: enrolToken },
      ...(stateDir === undefined ? {} : { stateDir }),
    });
    started.push(a);
    return a;
  };
  const createEnrolToken = async (args: string[]) => {
    const r = await cli(['agent', 'enrol-token', 'create', ...args], bed.world.env);
    assert.equal(r.code, 0, r.stderr);
    return r.stdout.trim();
  };
  /** POST /enrol with `token` for `name` (and the machine's `key`): the status and the error code, if any. */
  const enrolByHttp = async (token: string, name: string, key?: string) => {
    const res = await fetch(`${bed.server.url}/api/v1/workspaces/default/enrol`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' },
      body: JSON.stringify(key === undefined ? { name } : { name, key }),
    });
    const body = (await res.json()) as { code?: string; message?: string; token?: string };
    return { status: res.status, code: body.code, message: body.message ?? '', token: body.token };
  };
  const deploy = async (agents: Record<string, string>) => {
    const file = await writeDeployJson(bed.world.profiles, { agents });
    return await cli(['deploy', 'activate', file, '--timeout', '90s'], bed.world.env);
  };

  it('--uses 3 enrols three agents, refuses the fourth, and the stored tokens outlive the enrolment token', async (t) => {
    t.after(async () => {
      await Promise.all(started.map((a) => a.stop()));
    });
    const enrolToken = await createEnrolToken(['--uses', '3', '--expires', '7d', '--tag', 'fleet']);
    const names = ['enrol-a', 'enrol-b', 'enrol-c'];
    const stateDirs = new Map<string, string>();
    for (const name of names) {
      const dir = await mkdtemp(join(tmpdir(), 'cairn-enrol-'));
      stateDirs.set(name, dir);
      const a = await enrolAgent(name, enrolToken, dir);
      await a.waitFor(/enrolled as agent/);
      await a.waitFor(/connected to/);
      // Its own token, readable by its owner alone.
      assert.equal((await stat(join(dir, 'agent-token'))).mode & 0o777, 0o600);
      assert.equal((await stat(join(dir, 'enrol-key'))).mode & 0o777, 0o600);
    }
    const fourth = await enrolAgent('enrol-d', enrolToken);
    const [code] = await once(fourth.child, 'exit');
    assert.notEqual(code, 0);
    assert.match(fourth.lines.join('\n'), /enrolment token \d+ is used up \(3 of 3 uses\)/);

    const listed = await cli(['agent', 'list', '--json'], bed.world.env);
    const agents = JSON.parse(listed.stdout) as Array<{ name: string; tags: string[]; online: boolean }>;
    for (const name of names) {
      const agent = agents.find((a) => a.name === name);
      assert.ok(agent, `agent ${name} is listed`);
      assert.deepEqual(agent.tags, ['fleet']);
      assert.equal(agent.online, true);
    }
    assert.equal(
      agents.find((a) => a.name === 'enrol-d'),
      undefined,
    );

    // Every enrolment is in the audit log, as done by the enrolment token.
    const { entries } = (await adminApi(bed.server, 'GET', '/audit?limit=100')) as {
      entries: Array<{ action: string; target: string; tokenName: string }>;
    };
    const enrolments = entries.filter((e) => e.action === 'agent.enrol');
    assert.deepEqual(enrolments.map((e) => e.target).sort(), names);
    assert.ok(enrolments.every((e) => /^enrolment token \d+$/.test(e.tokenName)));
    assert.ok(entries.some((e) => e.action === 'agent.enrol-refused' && e.target === 'enrol-d'));

    // Each enrolled agent deploys.
    const first = `enrol-first-${RUN_TAG}`;
    const paths = await bed.world.publish([plainPackage(first)]);
    const r = await deploy(Object.fromEntries(names.map((n) => [n, paths.get(first)!])));
    assert.equal(r.code, 0, r.stdout + r.stderr);
    for (const name of names) {
      assert.equal(await profileTarget(join(bed.world.profiles, name)), paths.get(first));
    }

    // Revoking the enrolment token leaves the agents it enrolled alone, and enrols no more.
    const list = await cli(['agent', 'enrol-token', 'list', '--json'], bed.world.env);
    const [info] = JSON.parse(list.stdout) as Array<{ id: number; uses: number; state: string }>;
    assert.equal(info?.uses, 3);
    assert.equal(info?.state, 'used up');
    const revoked = await cli(['agent', 'enrol-token', 'revoke', String(info.id)], bed.world.env);
    assert.equal(revoked.code, 0, revoked.stderr);
    const refused = await enrolByHttp(enrolToken, 'enrol-e');
    assert.equal(refused.code, 'UNAUTHENTICATED');
    assert.match(refused.message, /was revoked/);

    // A restarted agent uses its stored token: it does not enrol again, and it still deploys.
    const a = started[0]!;
    await a.stop();
    const again = await enrolAgent('enrol-a', enrolToken, stateDirs.get('enrol-a'));
    await again.waitFor(/connected to/);
    assert.ok(!again.lines.some((l) => /enrolled as agent/.test(l)), again.lines.join('\n'));
    const second = `enrol-second-${RUN_TAG}`;
    const paths2 = await bed.world.publish([plainPackage(second)]);
    const r2 = await deploy({ 'enrol-a': paths2.get(second)! });
    assert.equal(r2.code, 0, r2.stdout + r2.stderr);
    assert.equal(await profileTarget(join(bed.world.profiles, 'enrol-a')), paths2.get(second));
    const after = (await adminApi(bed.server, 'GET', '/audit?limit=100')) as {
      entries: Array<{ action: string }>;
    };
    assert.equal(after.entries.filter((e) => e.action === 'agent.enrol').length, 3);
  });

  it('is refused everywhere but enrolment: the API, the agent connection and the cache', async () => {
    const enrolToken = await createEnrolToken(['--uses', '2']);
    const api = await fetch(`${bed.server.url}/api/v1/workspaces/default/agents`, {
      headers: { Authorization: `Bearer ${enrolToken}` },
    });
    assert.equal(api.status, 403);
    assert.equal(((await api.json()) as { code: string }).code, 'FORBIDDEN');
    const create = await fetch(`${bed.server.url}/api/v1/workspaces/default/agents`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${enrolToken}`, 'Content-Type': 'application/json' },
      body: JSON.stringify({ name: 'sneaky' }),
    });
    assert.equal(create.status, 403);
    const cache = await fetch(`${bed.server.url}/cache/main/nix-cache-info`, {
      headers: { Authorization: `Bearer ${enrolToken}` },
    });
    assert.equal(cache.status, 403);
    // Nor does it sign in to the dashboard.
    await assert.rejects(signInToDashboard(bed.server.url, enrolToken), /Cannot use an enrolment token here/);
    // As an agent's own token, it cannot connect.
    const agent = await startAgent({
      name: 'sneaky',
      token: enrolToken,
      profile: join(bed.world.profiles, 'sneaky'),
      server: bed.server.url,
    });
    started.push(agent);
    await agent.waitFor(/Cannot use an enrolment token here/);
    assert.ok(!agent.lines.some((l) => /connected to/.test(l)));
    await agent.stop();
    // Nothing of it was used up.
    const { enrolTokens } = (await adminApi(bed.server, 'GET', '/enrol-tokens')) as {
      enrolTokens: Array<{ uses: number; maxUses: number }>;
    };
    assert.equal(enrolTokens.at(-1)?.uses, 0);
  });

  it('refuses clearly: a taken name, a name off the pattern, an expired token, an unknown one', async () => {
    const patterned = await createEnrolToken(['--uses', '5', '--name-pattern', 'web-[0-9]+']);
    const off = await enrolByHttp(patterned, 'db-1');
    assert.equal(off.code, 'INVALID_ARGUMENT');
    assert.match(off.message, /does not match the enrolment token's pattern \(web-\[0-9\]\+\)/);
    // The pattern matches whole names only.
    assert.equal((await enrolByHttp(patterned, 'xweb-1')).code, 'INVALID_ARGUMENT');
    const ok = await enrolByHttp(patterned, 'web-1');
    assert.equal(ok.status, 201);
    const taken = await enrolByHttp(patterned, 'web-1');
    assert.equal(taken.code, 'ALREADY_EXISTS');
    assert.match(taken.message, /an agent of that name exists/);
    // Refusals take no use: one enrolment of five.
    const { enrolTokens } = (await adminApi(bed.server, 'GET', '/enrol-tokens')) as {
      enrolTokens: Array<{ uses: number }>;
    };
    assert.equal(enrolTokens.at(-1)?.uses, 1);

    const soon = (await adminApi(bed.server, 'POST', '/enrol-tokens', {
      expiresAt: new Date(Date.now() + 1500).toISOString(),
    })) as { token: string };
    await new Promise((r) => setTimeout(r, 2000));
    const expired = await enrolByHttp(soon.token, 'late-1');
    assert.equal(expired.code, 'UNAUTHENTICATED');
    assert.match(expired.message, /expired at/);

    const unknown = await enrolByHttp(`cairn_enrol_${'A'.repeat(43)}`, 'who-1');
    assert.equal(unknown.code, 'UNAUTHENTICATED');
    const agentToken = await enrolByHttp(bed.server.adminToken, 'who-2');
    assert.equal(agentToken.code, 'UNAUTHENTICATED');
    assert.match(agentToken.message, /an enrolment token is required/);
  });

  it('validates what creates an enrolment token, on the command line and in the API', async () => {
    for (const [args, message] of [
      [['--uses', '0'], /--uses: expected a whole number/],
      [['--uses', '2.5'], /--uses: expected a whole number/],
      [['--uses', 'many'], /--uses: expected a whole number/],
      [['--name-pattern', 'web-('], /--name-pattern: it is not a valid regular expression/],
      [['--name-pattern', 'a'.repeat(201)], /--name-pattern: it must be at most 200 characters/],
      [['--expires', '2001-01-01'], /--expires/],
    ] as const) {
      const r = await cli(['agent', 'enrol-token', 'create', ...args], bed.world.env);
      assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, message);
    }
    for (const body of [
      { uses: 0 },
      { uses: 1.5 },
      { uses: '3' },
      { namePattern: '(' },
      { namePattern: 'a'.repeat(201) },
      { namePattern: '' },
      { expiresAt: new Date(Date.now() - 60_000).toISOString() },
      { tags: ['Not A Tag'] },
      { unknown: true },
    ]) {
      const res = await fetch(`${bed.server.url}/api/v1/workspaces/default/enrol-tokens`, {
        method: 'POST',
        headers: { Authorization: `Bearer ${bed.server.adminToken}`, 'Content-Type': 'application/json' },
        body: JSON.stringify(body),
      });
      assert.equal(res.status, 400, JSON.stringify(body));
      assert.equal(((await res.json()) as { code: string }).code, 'INVALID_ARGUMENT');
    }
    // Only admins create them.
    const activate = await cli(['token', 'create', '--scope', 'activate'], bed.world.env);
    const res = await fetch(`${bed.server.url}/api/v1/workspaces/default/enrol-tokens`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${activate.stdout.trim()}`, 'Content-Type': 'application/json' },
      body: '{}',
    });
    assert.equal(res.status, 403);
  });

  it('refuses bad agent flags and missing enrolment tokens before starting', async () => {
    const stateDir = await mkdtemp(join(tmpdir(), 'cairn-enrol-'));
    const run = (args: string[], env: Record<string, string | undefined> = {}) =>
      cli(['deploy', 'agent', ...args, '--state-dir', stateDir], {
        CAIRN_SERVER: bed.server.url,
        CAIRN_AGENT_TOKEN: undefined,
        CAIRN_ENROL_TOKEN: undefined,
        ...env,
      });
    for (const [args, env, message] of [
      [['x1', '/tmp/p', '--enrol'], {}, /Cannot enrol: set CAIRN_ENROL_TOKEN, or give --enrol-token-file/],
      [
        ['x1', '/tmp/p', '--enrol-token-file', join(stateDir, 'missing')],
        {},
        /cannot read --enrol-token-file: ENOENT/,
      ],
      [['x1', '/tmp/p'], {}, /set CAIRN_AGENT_TOKEN .* or enrol with --enrol/],
      [[], {}, /give its name \(cairn deploy agent NAME\), or enrol under the hostname with --enrol/],
      [['Bad_Name', '--enrol'], { CAIRN_ENROL_TOKEN: 'x' }, /invalid agent name \(Bad_Name\)/],
      [['x1', '--bootstrap', '--bootstrap-wait', 'soon'], {}, /--bootstrap-wait: expected a duration/],
      [
        ['x1', '/tmp/p', '--enrol'],
        { CAIRN_ENROL_TOKEN: 'cairn_enrol_nope' },
        /an enrolment token is required/,
      ],
    ] as const) {
      const r = await run([...args], env);
      assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, message);
    }
    // Nothing was stored: a refused enrolment leaves no token behind.
    await assert.rejects(stat(join(stateDir, 'agent-token')));
  });

  it('enrols a machine again under its name when the answer to its enrolment was lost, with its key only', async (t) => {
    const agents: AgentProcess[] = [];
    t.after(async () => {
      await Promise.all(agents.map((a) => a.stop()));
    });
    const enrolToken = await createEnrolToken(['--uses', '1']);
    // The machine made its key and enrolled; the answer never reached it (the network dropped it,
    // or the machine stopped before storing its token): its state dir holds the key, no token.
    const stateDir = await mkdtemp(join(tmpdir(), 'cairn-enrol-lost-'));
    const key = randomBytes(32).toString('base64url');
    await writeFile(join(stateDir, 'enrol-key'), `${key}\n`, { mode: 0o600 });
    const lost = await enrolByHttp(enrolToken, 'enrol-lost', key);
    assert.ok(lost.token, `the first enrolment succeeded: ${lost.message}`);

    // Another machine, or one without the key, is refused: the token's one use is taken.
    const otherKey = await enrolByHttp(enrolToken, 'enrol-lost', randomBytes(32).toString('base64url'));
    assert.equal(otherKey.code, 'FORBIDDEN');
    assert.match(otherKey.message, /used up/);
    const noKey = await enrolByHttp(enrolToken, 'enrol-lost');
    assert.equal(noKey.code, 'FORBIDDEN');
    // With uses left, it finds the name taken.
    const roomy = await createEnrolToken(['--uses', '5']);
    const taken = await enrolByHttp(roomy, 'enrol-lost', key);
    assert.equal(
      taken.code,
      'ALREADY_EXISTS',
      'the key alone is not enough: the enrolment token must be the same',
    );
    const badKey = await enrolByHttp(enrolToken, 'enrol-lost', 'short');
    assert.equal(badKey.code, 'INVALID_ARGUMENT');

    // The machine starts again: same key, same name; it enrols again though the token is used up.
    const a = await enrolAgent('enrol-lost', enrolToken, stateDir);
    agents.push(a);
    await a.waitFor(/enrolled as agent enrol-lost/);
    await a.waitFor(/connected to/);
    const pkg = `enrol-lost-${RUN_TAG}`;
    const paths = await bed.world.publish([plainPackage(pkg)]);
    const r = await deploy({ 'enrol-lost': paths.get(pkg)! });
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.equal(await profileTarget(join(bed.world.profiles, 'enrol-lost')), paths.get(pkg));

    // Its first token, which it never stored, is revoked; the enrolment token took one use.
    const { tokens } = (await adminApi(bed.server, 'GET', '/tokens')) as {
      tokens: Array<{ name: string; revokedAt: string | null }>;
    };
    const its = tokens.filter((tk) => tk.name === 'agent enrol-lost');
    assert.equal(its.length, 2);
    assert.equal(its.filter((tk) => tk.revokedAt === null).length, 1, JSON.stringify(its));
    const list = await cli(['agent', 'enrol-token', 'list', '--json'], bed.world.env);
    const id = Number(/enrolment token (\d+) is used up/.exec(otherKey.message)?.[1]);
    const info = (JSON.parse(list.stdout) as Array<{ id: number; uses: number }>).find((e) => e.id === id);
    assert.equal(info?.uses, 1);
    const { entries } = (await adminApi(bed.server, 'GET', '/audit?limit=100')) as {
      entries: Array<{ action: string; target: string }>;
    };
    assert.ok(entries.some((e) => e.action === 'agent.enrol-again' && e.target === 'enrol-lost'));
  });

  it('with --require-approval, gives the agent no deployment until it is approved', async (t) => {
    const agents: AgentProcess[] = [];
    t.after(async () => {
      await Promise.all(agents.map((a) => a.stop()));
    });
    const enrolToken = await createEnrolToken(['--require-approval']);
    const a = await enrolAgent('approve-me', enrolToken);
    agents.push(a);
    await a.waitFor(/enrolled as agent approve-me.*cairn agent approve approve-me/);
    await a.waitFor(/connected to/);
    const listed = await cli(['agent', 'list'], bed.world.env);
    assert.match(listed.stdout, /approve-me .*\(pending approval\)/);
    const session = await signInToDashboard(bed.server.url, bed.server.adminToken);
    const fleet = await (await fetch(`${bed.server.url}/`, { headers: { Cookie: session.cookie } })).text();
    assert.match(fleet, /data-agent="approve-me"[\s\S]*?pending approval/);
    const page = await (
      await fetch(`${bed.server.url}/agents/approve-me`, { headers: { Cookie: session.cookie } })
    ).text();
    assert.match(page, /pending approval/);
    assert.match(
      page,
      /id="enrolled">with enrolment token \d+, .*waiting for <code>cairn agent approve approve-me<\/code>/,
    );

    const pkg = `enrol-approve-${RUN_TAG}`;
    const paths = await bed.world.publish([plainPackage(pkg)]);
    const file = await writeDeployJson(bed.world.profiles, { agents: { 'approve-me': paths.get(pkg)! } });
    const pending = await cli(['deploy', 'activate', file, '--timeout', '4s'], bed.world.env);
    // Not over in time: the agent was told nothing to run.
    assert.equal(pending.code, 3, pending.stdout + pending.stderr);
    assert.ok(!a.lines.some((l) => /deployment \d+: switching/.test(l)), a.lines.join('\n'));
    await assert.rejects(profileTarget(join(bed.world.profiles, 'approve-me')));

    const approved = await cli(['agent', 'approve', 'approve-me'], bed.world.env);
    assert.equal(approved.code, 0, approved.stderr);
    await a.waitFor(/deployment \d+: succeeded/, 60_000);
    assert.equal(await profileTarget(join(bed.world.profiles, 'approve-me')), paths.get(pkg));
    const again = await cli(['agent', 'approve', 'approve-me'], bed.world.env);
    assert.notEqual(again.code, 0);
    assert.match(again.stderr, /not waiting for approval/);
    const { entries } = (await adminApi(bed.server, 'GET', '/audit?limit=100')) as {
      entries: Array<{ action: string; target: string }>;
    };
    assert.ok(entries.some((e) => e.action === 'agent.approve' && e.target === 'approve-me'));
  });
});
