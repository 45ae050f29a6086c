import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { run } from '../helpers/nix.ts';
import { cli, startTestServer, type TestServer } from '../helpers/server.ts';

/**
 * `cairn agent create` tells the admin what to do on the machine: the token alone on stdout (for
 * a redirect into a secret), and on stderr the command to run and the NixOS settings, which the
 * real Nix evaluates to the agent's name and this server's URL.
 */
describe('cairn agent create: what to do next', () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer();
  });
  after(() => server?.stop());

  it('prints the token alone on stdout, and the command and NixOS settings on stderr', async () => {
    const r = await cli(['agent', 'create', 'web9'], {
      CAIRN_SERVER: server.url,
      CAIRN_TOKEN: server.adminToken,
    });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^cairn_\S+\n$/);
    assert.ok(
      r.stderr.includes(`  CAIRN_SERVER=${server.url} CAIRN_AGENT_TOKEN=<token> cairn deploy agent web9\n`),
      r.stderr,
    );
    const lines = r.stderr.split('\n');
    const start = lines.findIndex((l) => l.trim() === 'services.cairn-agent = {');
    const end = lines.findIndex((l, i) => i > start && l.trim() === '};');
    assert.ok(start >= 0 && end > start, r.stderr);
    const snippet = lines.slice(start, end + 1).join('\n');
    const evaluated = JSON.parse(
      await run('nix-instantiate', [
        '--eval',
        '--strict',
        '--json',
        '-E',
        `({ ${snippet} }).services.cairn-agent`,
      ]),
    ) as Record<string, unknown>;
    assert.deepEqual(evaluated, {
      enable: true,
      name: 'web9',
      serverUrl: server.url,
      tokenFile: '/run/secrets/cairn-agent-token',
    });
  });
});
