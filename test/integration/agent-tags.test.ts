import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { sql } from 'kysely';
import { agentInfoSchema } from '../../src/protocol/api-schemas.ts';
import { signInToDashboard } from '../helpers/dashboard-session.ts';
import { adminApi, cli, startTestServer, type TestServer } from '../helpers/server.ts';

interface AuditEntry {
  action: string;
  target: string;
  tokenName: string | null;
  detail: Record<string, unknown> | null;
}

describe('agent tags: set by an admin, shown by the API, the CLI and the dashboard', () => {
  let server: TestServer;
  let env: Record<string, string>;
  const api = (p: string) => `${server.url}/api/v1/workspaces/default/${p}`;
  const call = (method: string, path: string, body: unknown, token = server.adminToken) =>
    fetch(api(path), {
      method,
      headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' },
      body: JSON.stringify(body),
    });
  const tagsOf = async (name: string) =>
    agentInfoSchema.parse(await adminApi(server, 'GET', `/agents/${name}`)).tags;
  const audit = async (action: string) => {
    const { entries } = (await adminApi(server, 'GET', '/audit?limit=1000')) as unknown as {
      entries: AuditEntry[];
    };
    return entries.filter((e) => e.action === action);
  };

  before(async () => {
    server = await startTestServer();
    env = { CAIRN_SERVER: server.url, CAIRN_TOKEN: server.adminToken };
  });
  after(() => server?.stop());

  it('creates an agent with tags (repeated --tag), sorted and without duplicates', async () => {
    const r = await cli(
      ['agent', 'create', 'web1', '--tag', 'eu-west', '--tag', 'canary', '--tag', 'canary'],
      env,
    );
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(await tagsOf('web1'), ['canary', 'eu-west']);
    const plain = await cli(['agent', 'create', 'web2'], env);
    assert.equal(plain.code, 0, plain.stderr);
    assert.deepEqual(await tagsOf('web2'), []);
    const created = await adminApi(server, 'POST', '/agents', { name: 'db1', tags: ['db'] });
    assert.deepEqual((created.agent as { tags: string[] }).tags, ['db']);
    const [entry] = (await audit('agent.create')).filter((e) => e.target === 'web1');
    assert.deepEqual(entry?.detail, { tags: ['eu-west', 'canary', 'canary'] });
  });

  it('lists tags in a TAGS column, in --json and in the API list', async () => {
    const r = await cli(['agent', 'list'], env);
    assert.equal(r.code, 0, r.stderr);
    const [header, ...lines] = r.stdout.trimEnd().split('\n');
    assert.match(header!, /^NAME\s+TAGS\s+ONLINE/);
    const tagsCell = (name: string) => lines.find((l) => l.startsWith(`${name} `))?.split(/\s+/)[1];
    assert.equal(tagsCell('web1'), 'canary,eu-west');
    assert.equal(tagsCell('web2'), '-');
    assert.equal(tagsCell('db1'), 'db');
    const json = await cli(['agent', 'list', '--json'], env);
    const agents = JSON.parse(json.stdout) as Array<{ name: string; tags: string[] }>;
    assert.deepEqual(
      agents.map((a) => [a.name, a.tags]),
      [
        ['db1', ['db']],
        ['web1', ['canary', 'eu-west']],
        ['web2', []],
      ],
    );
    const listed = (await adminApi(server, 'GET', '/agents')).agents as Array<{
      name: string;
      tags: string[];
    }>;
    assert.deepEqual(listed.find((a) => a.name === 'web1')?.tags, ['canary', 'eu-west']);
  });

  it('adds and removes tags with cairn agent tag, and audits each change', async () => {
    const add = await cli(['agent', 'tag', 'web2', 'ring-1', 'canary'], env);
    assert.equal(add.code, 0, add.stderr);
    assert.match(add.stderr, /agent web2 now has tags canary, ring-1/);
    assert.deepEqual(await tagsOf('web2'), ['canary', 'ring-1']);
    // Adding a tag the agent has changes nothing, and is no error.
    assert.equal((await cli(['agent', 'tag', 'web2', 'canary'], env)).code, 0);
    assert.deepEqual(await tagsOf('web2'), ['canary', 'ring-1']);
    const remove = await cli(['agent', 'tag', 'web1', '--remove', 'canary', 'absent'], env);
    assert.equal(remove.code, 0, remove.stderr);
    assert.deepEqual(await tagsOf('web1'), ['eu-west']);
    const entries = await audit('agent.tag');
    const last = entries.find((e) => e.target === 'web1');
    assert.equal(last?.tokenName, 'admin');
    assert.deepEqual(last?.detail, { add: [], remove: ['canary', 'absent'], tags: ['eu-west'] });
    assert.equal(entries.filter((e) => e.target === 'web2').length, 2);
  });

  it('refuses an invalid tag with exit 2, naming it, and changes nothing', async () => {
    const bad = await cli(['agent', 'tag', 'web2', 'ok', 'Not OK!'], env);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /invalid tag "Not OK!"/);
    assert.deepEqual(await tagsOf('web2'), ['canary', 'ring-1']);
    const create = await cli(['agent', 'create', 'web3', '--tag', '-dash'], env);
    assert.equal(create.code, 2);
    assert.match(create.stderr, /invalid tag "-dash"/);
    const missing = await call('GET', 'agents/web3', undefined);
    assert.equal(missing.status, 404, 'an agent refused for its tags is not created');
  });

  it('refuses bodies that do not fit with 400 INVALID_ARGUMENT', async () => {
    const cases: Array<[unknown, RegExp]> = [
      [{ add: 'canary' }, /add: /],
      [{ tags: ['canary'] }, /Unrecognized key/i],
      [{}, /at least one tag/],
      [{ add: ['x'], remove: ['x'] }, /tag 'x' is both added and removed/],
      [{ add: ['a'.repeat(64)] }, /invalid tag "a{64}"/],
      [{ add: Array.from({ length: 33 }, (_, i) => `t${i}`) }, /at most 32 tags/],
    ];
    for (const [body, message] of cases) {
      const res = await call('PATCH', 'agents/web2/tags', body);
      const err = (await res.json()) as { code: string; message: string };
      assert.equal(res.status, 400, JSON.stringify(body));
      assert.equal(err.code, 'INVALID_ARGUMENT');
      assert.match(err.message, message);
    }
    const notJson = await fetch(api('agents/web2/tags'), {
      method: 'PATCH',
      headers: { Authorization: `Bearer ${server.adminToken}`, 'Content-Type': 'application/json' },
      body: '{"add":',
    });
    assert.equal(notJson.status, 400);
    assert.deepEqual(await tagsOf('web2'), ['canary', 'ring-1']);
  });

  it('refuses a 33rd tag and keeps the 32 the agent had', async () => {
    const tags = Array.from({ length: 30 }, (_, i) => `t${String(i).padStart(2, '0')}`);
    assert.equal((await call('PATCH', 'agents/web2/tags', { add: tags })).status, 200);
    const res = await call('PATCH', 'agents/web2/tags', { add: ['one-more'] });
    assert.equal(res.status, 400);
    const err = (await res.json()) as { code: string; message: string };
    assert.equal(err.code, 'INVALID_ARGUMENT');
    assert.match(err.message, /would have 33 tags, more than the 32 allowed/);
    assert.deepEqual(await tagsOf('web2'), ['canary', 'ring-1', ...tags]);
    // Removing and adding in one change is weighed after both: 32 stays allowed.
    const swap = await call('PATCH', 'agents/web2/tags', { add: ['one-more'], remove: ['t00'] });
    assert.equal(swap.status, 200, await swap.clone().text());
    assert.equal(((await swap.json()) as { tags: string[] }).tags.length, 32);
    const cleanup = await call('PATCH', 'agents/web2/tags', { remove: [...tags, 'one-more'] });
    assert.equal(cleanup.status, 200);
  });

  it('never lets changes at once leave an agent with more than 32 tags', async () => {
    await adminApi(server, 'POST', '/agents', { name: 'race' });
    // Six changes of six new tags each: five fit in 32, the sixth must be refused.
    const batch = (p: number) => Array.from({ length: 6 }, (_, i) => `r${p}-${i}`);
    const statuses = (
      await Promise.all([0, 1, 2, 3, 4, 5].map((p) => call('PATCH', 'agents/race/tags', { add: batch(p) })))
    ).map((r) => r.status);
    assert.deepEqual(statuses.sort(), [200, 200, 200, 200, 200, 400]);
    assert.equal((await tagsOf('race')).length, 30);
  });

  it('answers 404 for an unknown agent, and exit 1 from the CLI', async () => {
    const res = await call('PATCH', 'agents/nope/tags', { add: ['canary'] });
    assert.equal(res.status, 404);
    assert.equal(((await res.json()) as { code: string }).code, 'NOT_FOUND');
    const r = await cli(['agent', 'tag', 'nope', 'canary'], env);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /Cannot find agent 'nope'/);
  });

  it('refuses a token without the admin scope, which may still see the tags', async () => {
    const made = await cli(['token', 'create', '--scope', 'activate', '--name', 'deployer'], env);
    assert.equal(made.code, 0, made.stderr);
    const deployer = made.stdout.trim();
    const res = await call('PATCH', 'agents/web1/tags', { add: ['canary'] }, deployer);
    assert.equal(res.status, 403);
    assert.equal(((await res.json()) as { code: string }).code, 'FORBIDDEN');
    const r = await cli(['agent', 'tag', 'web1', 'canary'], { ...env, CAIRN_TOKEN: deployer });
    assert.equal(r.code, 2);
    assert.match(r.stderr, /lacks the admin scope/);
    const created = await call('POST', 'agents', { name: 'web9', tags: ['canary'] }, deployer);
    assert.equal(created.status, 403);
    assert.deepEqual(await tagsOf('web1'), ['eu-west']);
    const list = await cli(['agent', 'list', '--json'], { ...env, CAIRN_TOKEN: deployer });
    assert.equal(list.code, 0, list.stderr);
    const seen = JSON.parse(list.stdout) as Array<{ name: string; tags: string[] }>;
    assert.deepEqual(seen.find((a) => a.name === 'web1')?.tags, ['eu-west']);
  });

  it("parses an older server's agent, which has no tags, as having none", () => {
    const old = { name: 'a', online: false, lastSeenAt: null, storePath: null, generation: null, kind: null };
    const rest = { system: null, hostname: null, agentVersion: null, nixVersion: null, profile: null };
    assert.deepEqual(
      agentInfoSchema.parse({ ...old, ...rest, createdAt: new Date(0).toISOString() }).tags,
      [],
    );
  });

  it('shows tags on the fleet page and the agent page', async () => {
    await adminApi(server, 'POST', '/agents', { name: 'bare' });
    const session = await signInToDashboard(server.url, server.adminToken);
    const page = async (path: string) => {
      const res = await fetch(`${server.url}${path}`, { headers: { Cookie: session.cookie } });
      assert.equal(res.status, 200);
      return await res.text();
    };
    const fleet = await page('/');
    const row = /<tr data-agent="db1">([\s\S]*?)<\/tr>/.exec(fleet)?.[1] ?? '';
    assert.match(row, /<td class="opt tags"><span class="tag">db<\/span><\/td>/);
    assert.match(
      /<tr data-agent="bare">([\s\S]*?)<\/tr>/.exec(fleet)?.[1] ?? '',
      /class="opt tags"><span class="muted">none/,
    );
    // The API refuses such a tag, but the pages must escape whatever the database holds.
    await server.query(
      sql`insert into agent_tags (agent_id, tag) select id, '<b>x</b>' from agents where name = 'bare'`,
    );
    assert.match(await page('/'), /<span class="tag">&lt;b&gt;x&lt;\/b&gt;<\/span>/);
    assert.match(
      await page('/agents/bare'),
      /<dd id="tags"><span class="tag">&lt;b&gt;x&lt;\/b&gt;<\/span><\/dd>/,
    );
    const agent = await page('/agents/web2');
    assert.match(
      agent,
      /<dd id="tags"><span class="tag">canary<\/span> <span class="tag">ring-1<\/span><\/dd>/,
    );
  });
});
