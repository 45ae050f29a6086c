import assert from 'node:assert/strict';
import {
  chmod,
  lstat,
  mkdir,
  mkdtemp,
  readdir,
  readFile,
  readlink,
  rm,
  symlink,
  writeFile,
} from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { isCairnError } from '../../src/lib/cairn-error.ts';
import { dumpNar } from '../../src/nix/nar-dump.ts';
import { encodeNarString, NAR_LIMITS } from '../../src/nix/nar-format.ts';
import { type NarEvent, type ParseNarOptions, parseNar } from '../../src/nix/nar-parser.ts';
import { unpackNar } from '../../src/nix/nar-unpack.ts';

/** Raw bytes spliced into an archive as they are, to forge lengths and padding. */
class Raw {
  constructor(readonly bytes: Buffer) {}
}

/** Builds an archive from fields: strings and Buffers become NAR strings, Raw goes in as is. */
function nar(...fields: Array<string | Buffer | Raw>): Buffer {
  return Buffer.concat(fields.map((f) => (f instanceof Raw ? f.bytes : encodeNarString(f))));
}

const u64 = (n: bigint) => {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(n);
  return new Raw(b);
};

const MAGIC = 'nix-archive-1';
const file = (contents: string | Buffer) => ['(', 'type', 'regular', 'contents', contents, ')'];
const entry = (name: string | Buffer, ...node: Array<string | Buffer | Raw>) => [
  'entry',
  '(',
  'name',
  name,
  'node',
  ...node,
  ')',
];
const dir = (...entries: Array<string | Buffer | Raw>) => ['(', 'type', 'directory', ...entries, ')'];

/** Yields `bytes` in chunks of `size`, to exercise fields that straddle chunk boundaries. */
async function* chunked(bytes: Buffer, size = bytes.length || 1): AsyncGenerator<Buffer> {
  for (let i = 0; i < bytes.length; i += size) yield bytes.subarray(i, i + size);
}

async function collect(source: AsyncIterable<Buffer>): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const part of source) parts.push(part);
  return Buffer.concat(parts);
}

async function events(bytes: Buffer, chunkSize?: number): Promise<NarEvent[]> {
  const out: NarEvent[] = [];
  for await (const event of parseNar(chunked(bytes, chunkSize))) out.push(event);
  return out;
}

async function rejectsNar(bytes: Buffer, message: RegExp, options: ParseNarOptions = {}): Promise<void> {
  await assert.rejects(
    async () => {
      for await (const _ of parseNar(chunked(bytes), options)) {
        // drain
      }
    },
    (err) => {
      assert.ok(isCairnError(err, 'INVALID_NAR'), `expected INVALID_NAR, got ${err}`);
      assert.match(err.message, /^Cannot unpack NAR: /);
      assert.match(err.message, message);
      return true;
    },
  );
}

let tmp: string;
before(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'cairn-nar-'));
});
after(async () => {
  await rm(tmp, { recursive: true, force: true });
});

describe('parseNar', () => {
  const sample = nar(
    MAGIC,
    ...dir(
      ...entry(
        'bin',
        ...dir(...entry('hello', '(', 'type', 'regular', 'executable', '', 'contents', 'hi!', ')')),
      ),
      ...entry('empty', ...file('')),
      ...entry('link', '(', 'type', 'symlink', 'target', 'bin/hello', ')'),
    ),
  );

  it('yields nodes in archive order with paths, sizes and content offsets', async () => {
    const seen = await events(sample);
    const summary = seen.map((e) =>
      e.type === 'contents' ? `contents ${e.chunk}` : `${e.type} ${e.path.join('/')}`,
    );
    assert.deepEqual(summary, [
      'directory ',
      'directory bin',
      'regular bin/hello',
      'contents hi!',
      'regular empty',
      'symlink link',
    ]);
    const hello = seen[2];
    assert.ok(hello?.type === 'regular');
    assert.equal(hello.executable, true);
    assert.equal(hello.size, 3);
    assert.equal(sample.subarray(hello.offset, hello.offset + 3).toString(), 'hi!');
    const link = seen[5];
    assert.ok(link?.type === 'symlink');
    assert.equal(link.target.toString(), 'bin/hello');
  });

  it('reads the same events whatever the chunk boundaries', async () => {
    const whole = await events(sample);
    const strip = (es: NarEvent[]) => {
      // Contents may arrive in several chunks; compare the bytes, not the chunking.
      const merged: unknown[] = [];
      for (const e of es) {
        const last = merged.at(-1) as { type: string; chunk: Buffer } | undefined;
        if (e.type === 'contents' && last?.type === 'contents')
          last.chunk = Buffer.concat([last.chunk, e.chunk]);
        else merged.push(e.type === 'contents' ? { type: 'contents', chunk: Buffer.from(e.chunk) } : e);
      }
      return merged;
    };
    for (const size of [1, 3, 7, 8, 13])
      assert.deepEqual(strip(await events(sample, size)), strip(whole), `${size}`);
  });

  it('rejects every truncation of a valid archive', async () => {
    for (let length = 0; length < sample.length; length++) {
      await rejectsNar(sample.subarray(0, length), /archive is truncated/);
    }
  });

  const cases: Array<[string, Buffer, RegExp]> = [
    ['bad magic', nar('nix-archive-2', ...file('x')), /bad magic.*"nix-archive-2"/],
    ['magic of the wrong length', nar('tar', ...file('x')), /bad magic/],
    ['no open tag', nar(MAGIC, 'type', 'regular'), /expected '\('.*found "type"/],
    ['unknown file type', nar(MAGIC, '(', 'type', 'fifo', ')'), /unknown file type \("fifo"/],
    [
      'unknown field',
      nar(MAGIC, '(', 'type', 'regular', 'mode', '0644', ')'),
      /expected 'executable' or 'contents'/,
    ],
    [
      'executable after contents',
      nar(MAGIC, '(', 'type', 'regular', 'contents', 'x', 'executable', '', ')'),
      /expected '\)'.*found "executable"/,
    ],
    [
      'executable marker with a value',
      nar(MAGIC, '(', 'type', 'regular', 'executable', 'yes', 'contents', 'x', ')'),
      /executable marker is not empty/,
    ],
    ['two type fields', nar(MAGIC, '(', 'type', 'symlink', 'type', 'regular', ')'), /expected 'target'/],
    [
      'node before name',
      nar(MAGIC, '(', 'type', 'directory', 'entry', '(', 'node', ...file('x'), ')', ')'),
      /expected 'name'.*found "node"/,
    ],
    [
      'field of another type in a directory',
      nar(MAGIC, '(', 'type', 'directory', 'contents', 'x', ')'),
      /expected 'entry' or '\)'/,
    ],
    [
      'entries not sorted',
      nar(MAGIC, ...dir(...entry('b', ...file('')), ...entry('a', ...file('')))),
      /not sorted.*"a" after "b"/,
    ],
    [
      'entries sorted as UTF-16 rather than bytes',
      nar(MAGIC, ...dir(...entry('\u{1F600}', ...file('')), ...entry('\uFF21', ...file('')))),
      /not sorted/,
    ],
    [
      'duplicate names',
      nar(MAGIC, ...dir(...entry('a', ...file('')), ...entry('a', ...file('')))),
      /duplicate entry name \("a"/,
    ],
    ['empty name', nar(MAGIC, ...dir(...entry('', ...file('')))), /entry name is empty/],
    ['name "."', nar(MAGIC, ...dir(...entry('.', ...file('')))), /entry name is '\.'/],
    ['name ".."', nar(MAGIC, ...dir(...entry('..', ...file('')))), /entry name is '\.\.'/],
    ['name with a slash', nar(MAGIC, ...dir(...entry('a/b', ...file('')))), /entry name contains '\/'/],
    ['name with NUL', nar(MAGIC, ...dir(...entry('a\0b', ...file('')))), /entry name contains NUL/],
    [
      'name too long',
      nar(MAGIC, ...dir(...entry('n'.repeat(256), ...file('')))),
      /entry name is too long \(256 bytes/,
    ],
    [
      'empty symlink target',
      nar(MAGIC, '(', 'type', 'symlink', 'target', '', ')'),
      /symlink target is empty/,
    ],
    [
      'symlink target with NUL',
      nar(MAGIC, '(', 'type', 'symlink', 'target', 'a\0', ')'),
      /target contains NUL/,
    ],
    [
      'symlink target too long',
      nar(MAGIC, '(', 'type', 'symlink', 'target', 't'.repeat(4096), ')'),
      /symlink target is too long \(4096 bytes, limit 4095/,
    ],
    [
      'non-zero padding',
      nar(
        MAGIC,
        '(',
        'type',
        'regular',
        'contents',
        new Raw(Buffer.from('\x05\0\0\0\0\0\0\0hello\0\x01\0')),
        ')',
      ),
      /non-zero padding after the file contents/,
    ],
    [
      'absurd contents length',
      nar(MAGIC, '(', 'type', 'regular', 'contents', u64(2n ** 63n), ')'),
      /absurd length of the file contents/,
    ],
    [
      'absurd token length',
      nar(MAGIC, '(', u64(2n ** 40n)),
      /expected 'type' \(found a string of 1099511627776 bytes/,
    ],
    [
      'trailing garbage',
      Buffer.concat([nar(MAGIC, ...file('x')), Buffer.alloc(8)]),
      /trailing data after the archive \(at byte/,
    ],
    [
      'a second archive appended',
      Buffer.concat([nar(MAGIC, ...file('x')), nar(MAGIC, ...file('y'))]),
      /trailing data/,
    ],
  ];
  for (const [name, bytes, message] of cases) {
    it(`rejects ${name}`, async () => {
      await rejectsNar(bytes, message);
    });
  }

  it('rejects nesting deeper than the limit', async () => {
    const nested = (depth: number): Array<string | Buffer | Raw> =>
      depth === 0 ? file('') : dir(...entry('d', ...nested(depth - 1)));
    await rejectsNar(nar(MAGIC, ...nested(4)), /nested too deeply \(limit 3/, { maxDepth: 3 });
    assert.equal((await events(nar(MAGIC, ...nested(NAR_LIMITS.maxDepth)))).length, NAR_LIMITS.maxDepth + 1);
    await rejectsNar(nar(MAGIC, ...nested(NAR_LIMITS.maxDepth + 1)), /nested too deeply/);
  });

  it('names the path of the faulty node', async () => {
    await rejectsNar(
      nar(MAGIC, ...dir(...entry('a', ...dir(...entry('b', '(', 'type', 'pipe', ')'))))),
      /unknown file type \("pipe" at byte \d+ in a\/b\)/,
    );
  });
});

describe('dumpNar', () => {
  it('writes a regular file as nix-store --dump does', async () => {
    const path = join(tmp, 'plain');
    await writeFile(path, 'hello');
    assert.deepEqual(await collect(dumpNar(path)), nar(MAGIC, ...file('hello')));
    await chmod(path, 0o755);
    assert.deepEqual(
      await collect(dumpNar(path)),
      nar(MAGIC, '(', 'type', 'regular', 'executable', '', 'contents', 'hello', ')'),
    );
  });

  it('sorts entries by the bytes of their names, not by UTF-16', async () => {
    const root = join(tmp, 'sorted');
    await mkdir(root);
    for (const name of ['\u{1F600}', '\uFF21', 'B', 'a']) await writeFile(join(root, name), '');
    const expected = nar(
      MAGIC,
      ...dir(...['B', 'a', '\uFF21', '\u{1F600}'].flatMap((n) => entry(n, ...file('')))),
    );
    assert.deepEqual(await collect(dumpNar(root)), expected);
  });

  it('rejects a file type a NAR cannot hold', async () => {
    const root = join(tmp, 'with-socket');
    await mkdir(root);
    const server = createServer().listen(join(root, 'sock'));
    await new Promise((resolve) => server.once('listening', resolve));
    try {
      await assert.rejects(collect(dumpNar(root)), (err) => isCairnError(err, 'INVALID_ARGUMENT'));
    } finally {
      server.close();
    }
  });
});

describe('unpackNar', () => {
  async function makeTree(root: string): Promise<void> {
    await mkdir(join(root, 'bin'), { recursive: true });
    await mkdir(join(root, 'empty-dir'));
    await mkdir(join(root, 'deep/er/still'), { recursive: true });
    await writeFile(join(root, 'bin/tool'), '#!/bin/sh\necho hi\n', { mode: 0o755 });
    await writeFile(join(root, 'empty'), '');
    await writeFile(join(root, 'deep/er/still/data'), Buffer.alloc(300_000, 7));
    await writeFile(join(root, 'caf\u00e9 \u{1F600}'), 'a name in UTF-8');
    await symlink('bin/tool', join(root, 'link'));
    await symlink('/nonexistent/absolute', join(root, 'dangling'));
  }

  it('round-trips a tree through dump and unpack', async () => {
    const src = join(tmp, 'tree');
    await makeTree(src);
    const bytes = await collect(dumpNar(src));
    const out = join(tmp, 'tree-out');
    await unpackNar(chunked(bytes, 4096), out);
    assert.deepEqual(await collect(dumpNar(out)), bytes);
    assert.equal((await lstat(join(out, 'bin/tool'))).mode & 0o111, 0o111);
    assert.equal((await lstat(join(out, 'empty'))).mode & 0o111, 0);
    assert.ok((await lstat(join(out, 'link'))).isSymbolicLink());
    assert.equal(await readlink(join(out, 'dangling')), '/nonexistent/absolute');
    assert.equal((await readFile(join(out, 'deep/er/still/data'))).length, 300_000);
  });

  it('keeps names that are not UTF-8 byte for byte', async () => {
    const name = Buffer.from([0x66, 0xff, 0xfe]);
    const bytes = nar(MAGIC, ...dir(...entry(name, ...file('x'))));
    const out = join(tmp, 'latin');
    await unpackNar(chunked(bytes), out);
    assert.deepEqual(await readdir(out, { encoding: 'buffer' }), [name]);
    assert.deepEqual(await collect(dumpNar(out)), bytes);
  });

  it('unpacks a file or a symlink at the root, from a Readable', async () => {
    await unpackNar(Readable.from([nar(MAGIC, ...file('root file'))]), join(tmp, 'root-file'));
    assert.equal(await readFile(join(tmp, 'root-file'), 'utf8'), 'root file');
    await unpackNar(
      Readable.from([nar(MAGIC, '(', 'type', 'symlink', 'target', '/etc', ')')]),
      join(tmp, 'root-link'),
    );
    assert.equal(await readlink(join(tmp, 'root-link')), '/etc');
  });

  it('leaves nothing behind when the archive turns out bad at its very end', async () => {
    const parent = join(tmp, 'fail');
    await mkdir(parent);
    const src = join(tmp, 'tree-for-fail');
    await makeTree(src);
    const good = await collect(dumpNar(src));
    const bad = [Buffer.concat([good, Buffer.from('garbage!')]), good.subarray(0, good.length - 1)];
    for (const bytes of bad) {
      await assert.rejects(unpackNar(chunked(bytes, 1000), join(parent, 'out')), (err) =>
        isCairnError(err, 'INVALID_NAR'),
      );
      assert.deepEqual(await readdir(parent), []);
    }
  });

  it('does not write through a symlink followed by an entry of the same name', async () => {
    const outside = join(tmp, 'outside');
    await mkdir(outside);
    const hostile = nar(
      MAGIC,
      ...dir(
        ...entry('a', '(', 'type', 'symlink', 'target', outside, ')'),
        ...entry('a', ...dir(...entry('pwned', ...file('x')))),
      ),
    );
    await assert.rejects(unpackNar(chunked(hostile), join(tmp, 'hostile')), (err) =>
      isCairnError(err, 'INVALID_NAR'),
    );
    assert.deepEqual(await readdir(outside), []);
    await assert.rejects(lstat(join(tmp, 'hostile')), { code: 'ENOENT' });
  });

  it('refuses an existing target and leaves it alone', async () => {
    const target = join(tmp, 'existing');
    await writeFile(target, 'keep');
    await assert.rejects(unpackNar(chunked(nar(MAGIC, ...file('x'))), target), (err) =>
      isCairnError(err, 'INVALID_ARGUMENT'),
    );
    assert.equal(await readFile(target, 'utf8'), 'keep');
  });

  it('stops on abort and removes the partial tree', async () => {
    const parent = join(tmp, 'aborted');
    await mkdir(parent);
    const controller = new AbortController();
    async function* slow(): AsyncGenerator<Buffer> {
      yield nar(MAGIC, '(', 'type', 'directory', ...entry('a', ...file('x')));
      controller.abort(new Error('stop'));
      yield nar(...entry('b', ...file('y')), ')');
    }
    await assert.rejects(unpackNar(slow(), join(parent, 'out'), { signal: controller.signal }), /stop/);
    assert.deepEqual(await readdir(parent), []);
  });
});
