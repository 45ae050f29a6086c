import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { cli, startTestServer, type TestServer } from '../helpers/server.ts';

/** How often `needle` occurs in `text`. */
const count = (text: string, needle: string) => text.split(needle).length - 1;

/**
 * A validation error names each invalid field once on the CLI's stderr, whether the CLI found it
 * (deploy.json) or the server did (the answer's message and its `validations` list the same fields).
 */
describe('cairn validation errors', () => {
  let server: TestServer;
  let env: Record<string, string>;
  let dir: string;
  before(async () => {
    server = await startTestServer();
    env = { CAIRN_SERVER: server.url, CAIRN_TOKEN: server.adminToken };
    dir = await mkdtemp(join(tmpdir(), 'cairn-validation-'));
  });
  after(async () => {
    await server.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it('prints each field the server refused once', async () => {
    const r = await cli(['cache', 'create', 'Bad Name'], env);
    assert.equal(r.code, 2, r.stderr);
    assert.equal(count(r.stderr, 'name: must be 1-63 characters'), 1, r.stderr);

    const file = join(dir, 'unknown.json');
    await writeFile(
      file,
      JSON.stringify({
        agents: { ghost: `/nix/store/${'a'.repeat(32)}-x`, phantom: `/nix/store/${'b'.repeat(32)}-y` },
      }),
    );
    const d = await cli(['deploy', 'activate', file], env);
    assert.equal(d.code, 2, d.stderr);
    assert.equal(count(d.stderr, "unknown agent 'ghost'"), 1, d.stderr);
    assert.equal(count(d.stderr, "unknown agent 'phantom'"), 1, d.stderr);
  });

  it('prints each field of a bad deploy.json once, naming the file', async () => {
    const file = join(dir, 'bad.json');
    await writeFile(file, JSON.stringify({ agents: { web1: '/nix/store/x', web2: 42 } }));
    const r = await cli(['deploy', 'activate', file], env);
    assert.equal(r.code, 2, r.stderr);
    assert.ok(r.stderr.includes(`Cannot use ${file}: `), r.stderr);
    assert.equal(count(r.stderr, 'agents.web1: '), 1, r.stderr);
    assert.equal(count(r.stderr, 'agents.web2: '), 1, r.stderr);
  });
});
