import assert from 'node:assert/strict';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { parseNarInfo, serializeNarInfo } from '../../src/nix/narinfo.ts';
import { signNarInfo, verifyNarInfo } from '../../src/nix/narinfo-signature.ts';
import {
  formatPublicKey,
  formatSecretKey,
  generateSecretKey,
  parsePublicKey,
  parseSecretKey,
  type SecretKey,
} from '../../src/nix/signing-key.ts';
import { buildPackages, RUN_TAG, run, type TestPackage } from '../helpers/nix.ts';

let tmp = '';

/** A one-file package naming its deps, so that its output references them (echo is a shell builtin). */
function pkg(name: string, deps: readonly string[] = []): TestPackage {
  const refs = deps.map((d) => `$dep_${d.replace(/-/g, '_')}`).join(' ');
  return { name, deps, script: `echo ${RUN_TAG} ${refs} > $out` };
}

let lib = '';
let app = '';
/** A path that the first test signs in the local store with two Nix keys. */
let signed = '';

before(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'cairn-narinfo-'));
  const built = await buildPackages([
    pkg('narinfo-lib'),
    pkg('narinfo-app', ['narinfo-lib']),
    pkg('narinfo-signed', ['narinfo-lib']),
  ]);
  lib = built.get('narinfo-lib')!;
  app = built.get('narinfo-app')!;
  signed = built.get('narinfo-signed')!;
});

after(async () => {
  await rm(tmp, { recursive: true, force: true });
});

/** Makes a key pair with `nix-store --generate-binary-cache-key`; returns the key file paths and texts. */
async function nixKey(name: string) {
  const secretFile = join(tmp, `${name}.sec`);
  const publicFile = join(tmp, `${name}.pub`);
  await run('nix-store', ['--generate-binary-cache-key', name, secretFile, publicFile]);
  return {
    secretFile,
    secret: await readFile(secretFile, 'utf8'),
    public: await readFile(publicFile, 'utf8'),
  };
}

/** Copies `paths` and their closure into a new file:// cache with `params`; returns its directory. */
async function nixCopyToCache(label: string, paths: readonly string[], params = ''): Promise<string> {
  const dir = join(tmp, label);
  await run('nix', ['copy', '--to', `file://${dir}${params}`, ...paths]);
  return dir;
}

/** The narinfo files of a file:// cache, by file name. */
async function narinfos(dir: string): Promise<Map<string, string>> {
  const names = (await readdir(dir)).filter((f) => f.endsWith('.narinfo')).sort();
  return new Map(
    await Promise.all(names.map(async (f) => [f, await readFile(join(dir, f), 'utf8')] as const)),
  );
}

/** Replaces every narinfo's signatures in a file:// cache by one signature made by `key`. */
async function resignCache(dir: string, key: SecretKey): Promise<void> {
  for (const [file, text] of await narinfos(dir)) {
    const info = parseNarInfo(text);
    await writeFile(join(dir, file), serializeNarInfo({ ...info, sigs: [signNarInfo(info, key)] }));
  }
}

describe('narinfo files written by Nix 2.8', () => {
  it('parse and serialize back byte for byte, whatever the compression', async () => {
    // Content-addressed paths of all three kinds, and a path with two signatures.
    const file = join(tmp, 'ca-file.txt');
    await writeFile(file, `cairn ${RUN_TAG}\n`);
    const flat = (await run('nix', ['store', 'add-file', file])).trim();
    const recursive = (await run('nix', ['store', 'add-path', file, '--name', 'ca-rec'])).trim();
    const expr = `builtins.toFile "ca-text" "cairn ${RUN_TAG}"`;
    const text = (await run('nix', ['eval', '--raw', '--expr', expr])).trim();
    for (const name of ['nix-rt-1', 'nix-rt-2']) {
      await run('nix', ['store', 'sign', '--key-file', (await nixKey(name)).secretFile, signed]);
    }
    const paths = [app, flat, recursive, text, signed];
    for (const params of ['', '?compression=xz', '?compression=none']) {
      const files = await narinfos(
        await nixCopyToCache(`roundtrip${params.replace(/\W/g, '-')}`, paths, params),
      );
      assert.equal(files.size, 6, params);
      const seen = { cas: new Set<string>(), maxSigs: 0, compression: new Set<string>() };
      for (const [name, text] of files) {
        const info = parseNarInfo(text);
        assert.equal(serializeNarInfo(info), text, `${params} ${name}`);
        assert.equal(
          name,
          `${info.storePath.slice('/nix/store/'.length, '/nix/store/'.length + 32)}.narinfo`,
        );
        if (info.ca !== undefined) seen.cas.add(info.ca.replace(/sha256:.*/, ''));
        seen.maxSigs = Math.max(seen.maxSigs, info.sigs.length);
        seen.compression.add(info.compression ?? 'absent');
      }
      assert.deepEqual([...seen.cas].sort(), ['fixed:', 'fixed:r:', 'text:'], params);
      assert.equal(seen.maxSigs, 2, params);
      assert.deepEqual([...seen.compression], [params === '?compression=none' ? 'none' : 'xz'], params);
    }
  });

  it('carry signatures Cairn verifies, made by a key from nix-store --generate-binary-cache-key', async () => {
    const key = await nixKey('nix-made-1');
    const dir = await nixCopyToCache('nix-signed', [app], `?secret-key=${key.secretFile}`);
    const trusted = parsePublicKey(key.public);
    const secret = parseSecretKey(key.secret);
    assert.equal(formatPublicKey(secret.publicKey), key.public);
    const files = await narinfos(dir);
    assert.equal(files.size, 2);
    for (const [name, text] of files) {
      const info = parseNarInfo(text);
      assert.equal(info.sigs.length, 1, name);
      assert.deepEqual(verifyNarInfo(info, [trusted]), ['nix-made-1'], name);
      // ed25519 is deterministic: Cairn's signature with Nix's key is the one Nix wrote.
      assert.equal(signNarInfo(info, secret), info.sigs[0], name);
      assert.deepEqual(verifyNarInfo(info, [generateSecretKey('nix-made-1').publicKey]), [], name);
      assert.deepEqual(verifyNarInfo({ ...info, narSize: info.narSize + 1 }, [trusted]), [], name);
    }
  });
});

describe('narinfo signatures made by Cairn', () => {
  it('are accepted by nix store verify, and a wrong key is rejected', async () => {
    const key = generateSecretKey('cairn-test-1');
    const dir = await nixCopyToCache('cairn-signed', [app], '?compression=none');
    await resignCache(dir, key);
    const verify = (publicKey: string) =>
      run('nix', [
        'store',
        'verify',
        '--store',
        `file://${dir}`,
        '--trusted-public-keys',
        publicKey,
        '--sigs-needed',
        '1',
        app,
        lib,
      ]);
    await verify(formatPublicKey(key.publicKey));
    const impostor = generateSecretKey('cairn-test-1');
    await assert.rejects(verify(formatPublicKey(impostor.publicKey)), /is untrusted/);
    const renamed = formatPublicKey({ ...key.publicKey, name: 'cairn-test-2' });
    await assert.rejects(verify(renamed), /is untrusted/);
  });

  it('let Nix substitute from the cache only with the right trusted key', async () => {
    const key = generateSecretKey('cairn-test-2');
    const dir = await nixCopyToCache('cairn-substitute', [app], '?compression=xz');
    await resignCache(dir, key);
    const copy = (root: string, publicKey: string) =>
      run('nix', [
        'copy',
        '--from',
        `file://${dir}`,
        '--to',
        join(tmp, root),
        '--trusted-public-keys',
        publicKey,
        app,
      ]);
    await assert.rejects(
      copy('root-wrong', formatPublicKey(generateSecretKey('cairn-test-2').publicKey)),
      /lacks a valid signature/,
    );
    await copy('root-right', formatPublicKey(key.publicKey));
    const stored = await readdir(join(tmp, 'root-right', 'nix', 'store'));
    assert.ok(stored.includes(app.slice('/nix/store/'.length)));
    assert.ok(stored.includes(lib.slice('/nix/store/'.length)));
  });

  it('come from a secret key file that Nix itself signs with identically', async () => {
    const key = generateSecretKey('cairn-test-3');
    const keyFile = join(tmp, 'cairn-test-3.sec');
    await writeFile(keyFile, formatSecretKey(key));
    const dir = await nixCopyToCache('cairn-key-nix-signed', [app], `?secret-key=${keyFile}`);
    for (const [name, text] of await narinfos(dir)) {
      const info = parseNarInfo(text);
      assert.deepEqual(info.sigs, [signNarInfo(info, key)], name);
    }
  });
});
