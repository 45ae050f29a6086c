import assert from 'node:assert/strict';
import { mkdtemp, readFile, readlink, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { type AgentProcess, startAgent } from '../helpers/agent-process.ts';
import { plainPackage } from '../helpers/deploy-fixtures.ts';
import { buildPackages, RUN_TAG, run } from '../helpers/nix.ts';
import { cli } from '../helpers/server.ts';
import { freePort, type ServerProcess, spawnServer } from '../helpers/server-process.ts';

describe('a server restart', () => {
  const cleanup: Array<() => Promise<unknown>> = [];
  after(async () => {
    for (const c of cleanup.reverse()) await c().catch(() => {});
  });

  it('is survived by connected agents: they reconnect on their own and get the next deployment', async () => {
    const dataDir = await mkdtemp(join(tmpdir(), 'cairn-restart-'));
    cleanup.push(() => rm(dataDir, { recursive: true, force: true }));
    const port = await freePort();
    let server: ServerProcess = await spawnServer({ port, dataDir });
    cleanup.push(() => server.kill('SIGKILL'));
    const env = {
      CAIRN_SERVER: server.url,
      CAIRN_TOKEN: (await readFile(join(dataDir, 'admin-token'), 'utf8')).trim(),
    };
    assert.equal((await cli(['cache', 'create', 'main'], env)).code, 0);
    const tokens = new Map<string, string>();
    for (const name of ['r1', 'r2'])
      tokens.set(name, (await cli(['agent', 'create', name], env)).stdout.trim());
    const agents: AgentProcess[] = [];
    for (const [name, token] of tokens) {
      const a = await startAgent({
        name,
        token,
        server: server.url,
        profile: join(dataDir, `profile-${name}`),
      });
      cleanup.push(() => a.stop());
      await a.waitFor(/connected to/);
      agents.push(a);
    }

    await server.kill('SIGTERM');
    for (const a of agents) await a.waitFor(/reconnecting in/);
    server = await spawnServer({ port, dataDir });
    // Both come back by themselves.
    for (const a of agents) {
      const deadline = Date.now() + 30_000;
      while (a.lines.filter((l) => /connected to/.test(l)).length < 2) {
        assert.ok(Date.now() < deadline, `agent did not reconnect:\n${a.lines.join('\n')}`);
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    const paths = await buildPackages([plainPackage(`restart-${RUN_TAG}`)]);
    const path = paths.get(`restart-${RUN_TAG}`)!;
    assert.equal((await cli(['push', 'main', path], env)).code, 0);
    await run('nix-store', ['--delete', path]).catch(() => {});
    const file = join(dataDir, 'deploy.json');
    await writeFile(file, JSON.stringify({ agents: { r1: path, r2: path } }));
    const r = await cli(['deploy', 'activate', file, '--timeout', '60s'], env);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    for (const name of ['r1', 'r2']) {
      const profile = join(dataDir, `profile-${name}`);
      assert.equal(await readlink(join(dataDir, await readlink(profile))), path);
    }
  });
});
