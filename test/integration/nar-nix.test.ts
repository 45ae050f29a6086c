import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmod, mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { dumpNar } from '../../src/nix/nar-dump.ts';
import { unpackNar } from '../../src/nix/nar-unpack.ts';
import { encodeNix32 } from '../../src/nix/nix32.ts';
import { nixEnv, run } from '../helpers/nix.ts';

const execFileAsync = promisify(execFile);

/** `nix-store --dump PATH`, as bytes. */
async function nixDump(path: string): Promise<Buffer> {
  const { stdout } = await execFileAsync('nix-store', ['--dump', path], {
    env: nixEnv(),
    encoding: 'buffer',
    maxBuffer: 64 * 1024 * 1024,
  });
  return stdout;
}

/** `nix-store --restore PATH` fed with `nar` on stdin. */
async function nixRestore(path: string, nar: Buffer): Promise<void> {
  const child = spawn('nix-store', ['--restore', path], { env: nixEnv(), stdio: ['pipe', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => {
    stderr += d.toString();
  });
  const code = await new Promise<number | null>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', resolve);
    child.stdin.end(nar);
  });
  assert.equal(code, 0, `nix-store --restore failed: ${stderr}`);
}

async function cairnDump(path: string): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const part of dumpNar(path)) parts.push(part);
  return Buffer.concat(parts);
}

/** Yields `bytes` in uneven chunks, so that fields straddle chunk boundaries. */
async function* chunked(bytes: Buffer): AsyncGenerator<Buffer> {
  for (let i = 0, n = 1; i < bytes.length; i += n, n = (n * 7 + 3) % 100_003) yield bytes.subarray(i, i + n);
}

let tmp = '';
let counter = 0;
const fresh = (name: string) => join(tmp, `${name}-${counter++}`);

/** Each fixture is a path in `tmp` that both Nix and Cairn serialise. */
const fixtures = new Map<string, string>();

before(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'cairn-nar-nix-'));
  const tree = join(tmp, 'tree');
  await mkdir(join(tree, 'bin'), { recursive: true });
  await mkdir(join(tree, 'empty-dir'));
  await mkdir(join(tree, 'a/b/c/d'), { recursive: true });
  await writeFile(join(tree, 'bin/tool'), '#!/bin/sh\necho tool\n', { mode: 0o755 });
  await writeFile(join(tree, 'empty'), '');
  await writeFile(join(tree, 'eight'), '12345678'); // no padding
  await writeFile(join(tree, 'a/b/c/d/deep'), 'deep\n');
  // Over a MiB, not a multiple of 8: crosses the chunks of both implementations.
  await writeFile(join(tree, 'big'), Buffer.alloc(1024 * 1024 + 5, 'x'));
  // Group and others may execute, the owner may not: Nix looks at the owner's bit only.
  await writeFile(join(tree, 'group-exec'), 'g');
  await chmod(join(tree, 'group-exec'), 0o654);
  await symlink('bin/tool', join(tree, 'link'));
  await symlink('/nix/store/does-not-exist', join(tree, 'absolute-dangling'));
  await symlink('../..', join(tree, 'a/b/up'));
  // In UTF-16, U+1F600 (a surrogate pair, 0xD83D...) sorts before U+FF21 and U+E000; in UTF-8
  // bytes (0xF0... against 0xEF...) it sorts after them. Nix sorts by bytes.
  for (const name of ['\u{1F600}', '\uFF21', '\uE000', 'B', 'a-file', '\u00e9', '_']) {
    await writeFile(join(tree, name), name);
  }
  // A name that is not UTF-8 at all.
  await writeFile(Buffer.from(`${tree}/latin1-\xe9`, 'latin1'), 'latin1');
  fixtures.set('a directory tree', tree);

  const file = join(tmp, 'root-file');
  await writeFile(file, 'a file at the root\n');
  fixtures.set('a file at the root', file);
  const exe = join(tmp, 'root-exe');
  await writeFile(exe, '#!/bin/sh\n', { mode: 0o700 });
  fixtures.set('an executable at the root', exe);
  const emptyFile = join(tmp, 'root-empty');
  await writeFile(emptyFile, '');
  fixtures.set('an empty file at the root', emptyFile);
  const link = join(tmp, 'root-link');
  await symlink('tree/bin/tool', link);
  fixtures.set('a symlink at the root', link);
  const emptyDir = join(tmp, 'root-empty-dir');
  await mkdir(emptyDir);
  fixtures.set('an empty directory at the root', emptyDir);
});

after(async () => {
  await rm(tmp, { recursive: true, force: true });
});

describe('NAR against Nix 2.8', () => {
  it('dumps the same bytes as nix-store --dump, with the same hash as nix-hash', async () => {
    for (const [what, path] of fixtures) {
      const ours = await cairnDump(path);
      assert.ok(ours.equals(await nixDump(path)), `${what}: dump differs from nix-store --dump`);
      const hash = encodeNix32(createHash('sha256').update(ours).digest());
      assert.equal(hash, (await run('nix-hash', ['--type', 'sha256', '--base32', path])).trim(), what);
    }
  });

  it('unpacks what nix-store --dump writes into a tree that Nix dumps identically', async () => {
    for (const [what, path] of fixtures) {
      const nar = await nixDump(path);
      const out = fresh('unpacked');
      await unpackNar(chunked(nar), out);
      assert.ok((await nixDump(out)).equals(nar), what);
    }
  });

  it('writes archives that nix-store --restore accepts and restores to the same tree', async () => {
    for (const [what, path] of fixtures) {
      const nar = await cairnDump(path);
      const out = fresh('restored');
      await nixRestore(out, nar);
      assert.ok((await nixDump(out)).equals(nar), what);
    }
  });
});
