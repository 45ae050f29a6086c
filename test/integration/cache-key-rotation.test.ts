import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import {
  createTestCache,
  otherMachineNixEnv,
  rawRequest,
  type Scratch,
  scratchDir,
  substituterArgs,
  type TestCache,
  writeNetrc,
} from '../helpers/binary-cache.ts';
import { plainPackage, profileTarget } from '../helpers/deploy-fixtures.ts';
import { useDeployTestbed } from '../helpers/deploy-testbed.ts';
import { buildPackages, deleteFromStore, RUN_TAG, run } from '../helpers/nix.ts';
import { cli, startTestServer, type TestServer } from '../helpers/server.ts';

describe('cache signing-key rotation with the real Nix', () => {
  let server: TestServer;
  let cache: TestCache;
  let scratch: Scratch;
  let pullNetrc: string;
  let admin: Record<string, string>;

  before(async () => {
    server = await startTestServer();
    cache = await createTestCache(server, 'rot');
    scratch = await scratchDir();
    pullNetrc = await writeNetrc(scratch.dir, cache.pullToken);
    admin = { CAIRN_SERVER: server.url, CAIRN_TOKEN: server.adminToken };
  });
  after(async () => {
    await server.stop();
    await scratch.cleanup();
  });

  async function buildAndPush(name: string): Promise<string> {
    const path = (await buildPackages([{ name: `${name}-${RUN_TAG}` }])).get(`${name}-${RUN_TAG}`)!;
    const push = await cli(['push', cache.name, path], {
      CAIRN_SERVER: server.url,
      CAIRN_TOKEN: cache.pushToken,
    });
    assert.equal(push.code, 0, push.stderr);
    return path;
  }

  /** Deletes `path` locally and substitutes it from the cache, as a machine trusting only `publicKey`. */
  async function substitute(path: string, publicKey: string): Promise<void> {
    await deleteFromStore([path]);
    const xdg = await scratchDir('cairn-xdg-');
    try {
      await run('nix-store', ['--realise', path, ...substituterArgs({ ...cache, publicKey }, pullNetrc)], {
        env: otherMachineNixEnv(xdg.dir),
      });
    } finally {
      await xdg.cleanup();
    }
    assert.equal(await run('nix-store', ['--verify-path', path]), '');
  }

  async function sigNames(path: string): Promise<string[]> {
    const hashPart = path.slice('/nix/store/'.length, '/nix/store/'.length + 32);
    const res = await rawRequest(`${cache.url}/${hashPart}.narinfo`, {
      headers: { Authorization: `Bearer ${cache.pullToken}` },
    });
    assert.equal(res.status, 200, res.body);
    return [...res.body.matchAll(/^Sig: ([^:]+):/gm)].map((m) => m[1]!);
  }

  it('machines trusting the old key or the new one both substitute until the old key is retired', async () => {
    const oldKey = cache.publicKey;
    const before = await buildAndPush('rot-before');
    // Read once, so that the narinfo as signed by the old key alone is held in memory.
    assert.deepEqual(await sigNames(before), ['rot-1']);

    const rotated = await cli(['cache', 'rotate-key', cache.name], admin);
    assert.equal(rotated.code, 0, rotated.stderr);
    const newKey = rotated.stdout.trim();
    assert.match(newKey, /^rot-2:[A-Za-z0-9+/]{43}=$/);
    assert.notEqual(newKey, oldKey);
    assert.match(rotated.stderr, /cairn cache retire-key rot rot-1/);
    // `cache info` names the new key, as agents are told.
    const info = await cli(['cache', 'info', cache.name, '--json'], admin);
    assert.equal(JSON.parse(info.stdout).publicKey, newKey);
    // Both keys it signs with, so that either can be put in trusted-public-keys meanwhile.
    assert.deepEqual(JSON.parse(info.stdout).signingKeys, [oldKey, newKey]);
    const shown = await cli(['cache', 'info', cache.name], admin);
    assert.ok(shown.stdout.includes(`public key:  ${newKey}\n`), shown.stdout);
    assert.ok(
      shown.stdout.includes(`also signs:  ${oldKey} (retire it with: cairn cache retire-key rot rot-1)`),
      shown.stdout,
    );

    const afterRotation = await buildAndPush('rot-after');
    assert.deepEqual(await sigNames(afterRotation), ['rot-1', 'rot-2']);
    // Served from memory before the rotation; signed by both now.
    assert.deepEqual(await sigNames(before), ['rot-1', 'rot-2']);
    await substitute(afterRotation, oldKey);
    await substitute(afterRotation, newKey);
    await substitute(before, newKey);

    const retired = await cli(['cache', 'retire-key', cache.name, oldKey], admin);
    assert.equal(retired.code, 0, retired.stderr);
    assert.match(retired.stderr, /retired key rot-1; cache rot now signs with rot-2/);
    const infoAfter = await cli(['cache', 'info', cache.name], admin);
    assert.doesNotMatch(infoAfter.stdout, /also signs/);
    assert.deepEqual(
      JSON.parse((await cli(['cache', 'info', cache.name, '--json'], admin)).stdout).signingKeys,
      [newKey],
    );
    assert.deepEqual(await sigNames(afterRotation), ['rot-2']);
    assert.deepEqual(await sigNames(before), ['rot-2']);
    await substitute(afterRotation, newKey);
    // Nix 2.8 says "is not signed by any of the keys", later ones "not signed by enough public keys".
    await assert.rejects(
      substitute(afterRotation, oldKey),
      /not signed by (any of the keys|enough public keys)/,
    );

    const audit = await cli(['audit', '--json'], admin);
    assert.match(audit.stdout, /cache\.rotate-key/);
    assert.match(audit.stdout, /cache\.retire-key/);
  });

  it('refuses to retire the last key, a retired key, or a malformed key name', async () => {
    const last = await cli(['cache', 'retire-key', cache.name, 'rot-2'], admin);
    assert.equal(last.code, 1);
    assert.match(last.stderr, /Cannot retire the signing key: 'rot-2' is the cache's last key/);
    const api = await rawRequest(`${server.url}/api/v1/workspaces/default/caches/rot/keys/rot-2`, {
      method: 'DELETE',
      headers: { Authorization: `Bearer ${server.adminToken}` },
    });
    assert.equal(api.status, 409);
    assert.equal(JSON.parse(api.body).code, 'CONFLICT');
    const listed = await rawRequest(`${server.url}/api/v1/workspaces/default/caches/rot/keys`, {
      headers: { Authorization: `Bearer ${server.adminToken}` },
    });
    const keys = JSON.parse(listed.body).keys as Array<{ name: string; retiredAt: string | null }>;
    assert.deepEqual(
      keys.map((k) => [k.name, k.retiredAt === null]),
      [
        ['rot-1', false],
        ['rot-2', true],
      ],
    );
    const again = await cli(['cache', 'retire-key', cache.name, 'rot-1'], admin);
    assert.equal(again.code, 1);
    assert.match(again.stderr, /no active key named 'rot-1' \(active: rot-2\)/);
    const bad = await cli(['cache', 'retire-key', cache.name, 'rot 2'], admin);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /Cannot retire the key: the key name contains a colon, whitespace/);
    const noCache = await cli(['cache', 'rotate-key', 'nope'], admin);
    assert.equal(noCache.code, 1);
    assert.match(noCache.stderr, /no cache named 'nope'/);
    const notAdmin = await cli(['cache', 'rotate-key', cache.name], {
      CAIRN_SERVER: server.url,
      CAIRN_TOKEN: cache.pushToken,
    });
    assert.equal(notAdmin.code, 2);
    assert.match(notAdmin.stderr, /Cannot rotate a signing key: token 'rot-push' lacks the admin scope/);
  });
});

describe('cache signing-key rotation and connected agents', () => {
  const bed = useDeployTestbed();

  it('an agent connected since before the rotation deploys a path signed only by the new key', async () => {
    const agent = await bed.agent('rk1');
    const env = bed.world.env;
    const rotated = await cli(['cache', 'rotate-key', 'main'], env);
    assert.equal(rotated.code, 0, rotated.stderr);
    const retired = await cli(['cache', 'retire-key', 'main', 'main-1'], env);
    assert.equal(retired.code, 0, retired.stderr);
    // Pushed once main-1 is retired: its narinfo carries main-2's signature alone, which the agent
    // trusts only if the server told it the new key.
    const name = `rk-after-${RUN_TAG}`;
    const path = (await bed.world.publish([plainPackage(name)])).get(name)!;
    const r = await bed.activate({ agents: { rk1: path } });
    assert.equal(r.code, 0, `${r.stdout}${r.stderr}\n${agent.lines.join('\n')}`);
    assert.equal(await profileTarget(join(bed.world.profiles, 'rk1')), path);
  });
});
