import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { isCairnError } from '../../src/lib/cairn-error.ts';
import { dumpNar } from '../../src/nix/nar-dump.ts';
import { encodeNarString } from '../../src/nix/nar-format.ts';
import { parseNar } from '../../src/nix/nar-parser.ts';
import { unpackNar } from '../../src/nix/nar-unpack.ts';

/**
 * Property-based fuzzing of the NAR parser and unpacker. Valid archives are built from random
 * trees, then mutated at the tree level (unsorted or duplicate entries, hostile names and
 * targets) and at the byte level (truncation, flipped bytes, splices, absurd length fields).
 * Whatever the bytes, parseNar yields the canonical archive they are or throws INVALID_NAR, and
 * unpackNar leaves either that tree at the target or nothing at all, and nothing anywhere else.
 * The seed is fixed so that a failure replays (fast-check prints it); set FUZZ_SEED to explore.
 */
const SEED = Number(process.env.FUZZ_SEED ?? 7);
const params = (numRuns: number) => ({ seed: SEED, numRuns, includeErrorInReport: true });

/** A file tree as a NAR holds it; entries in archive order (sorted and unique when valid). */
type Tree =
  | { readonly type: 'regular'; readonly executable: boolean; readonly contents: Buffer }
  | { readonly type: 'symlink'; readonly target: Buffer }
  | { readonly type: 'directory'; readonly entries: ReadonlyArray<readonly [Buffer, Tree]> };

// --- Encoding --------------------------------------------------------------------------------

/** The NAR of `tree`, entries written in the order they are in (so mutants can break the order). */
function encode(tree: Tree): Buffer {
  const out: Buffer[] = [];
  const put = (...fields: Array<string | Buffer>) => {
    for (const f of fields) out.push(encodeNarString(f));
  };
  const node = (t: Tree) => {
    put('(', 'type');
    if (t.type === 'regular') {
      put('regular', ...(t.executable ? ['executable', ''] : []), 'contents', t.contents);
    } else if (t.type === 'symlink') {
      put('symlink', 'target', t.target);
    } else {
      put('directory');
      for (const [name, child] of t.entries) {
        put('entry', '(', 'name', name, 'node');
        node(child);
        put(')');
      }
    }
    put(')');
  };
  put('nix-archive-1');
  node(tree);
  return Buffer.concat(out);
}

/** Yields `bytes` in chunks of `size` (or more: at most 500 chunks), so that fields straddle chunks. */
function* chunked(bytes: Buffer, size: number): Generator<Buffer> {
  const step = Math.max(size, Math.ceil(bytes.length / 500));
  for (let i = 0; i < bytes.length; i += step) yield bytes.subarray(i, i + step);
}

/** Archive bytes that fast-check prints as base64 (or a summary), not as a list of numbers. */
class Nar {
  constructor(readonly bytes: Buffer) {}
  [fc.toStringMethod](): string {
    if (this.bytes.length > 4096) return `<NAR of ${this.bytes.length} bytes>`;
    return `Buffer.from('${this.bytes.toString('base64')}', 'base64')`;
  }
}

// --- Generators ------------------------------------------------------------------------------

const ok = (name: Buffer) =>
  name.length > 0 && name.toString('latin1') !== '.' && name.toString('latin1') !== '..';
/** Entry names: plain ones, and any bytes but NUL and '/' (newlines, escapes, invalid UTF-8). */
const entryName = fc
  .oneof(
    { weight: 3, arbitrary: fc.stringMatching(/^[a-zA-Z0-9._-]{1,10}$/).map((s) => Buffer.from(s)) },
    fc
      .uint8Array({ minLength: 1, maxLength: 16 })
      .map((b) => Buffer.from(b.map((x) => (x === 0 || x === 0x2f ? 0x5f : x)))),
    fc
      .constantFrom('.a', '..a', 'A', 'a', '\n', '\x1b[31m', 'é', 'e\u0301', '\uFEFF')
      .map((s) => Buffer.from(s)),
    fc.constant(Buffer.alloc(255, 'n')),
  )
  .filter(ok);
/** Symlink targets, many of them pointing out of the tree: legitimate in a store path. */
const target = fc.oneof(
  fc
    .constantFrom('..', '../..', '../../../../../../etc/passwd', '/', '/etc/shadow', '.', 'a/b/c', '/tmp')
    .map((s) => Buffer.from(s)),
  fc.uint8Array({ minLength: 1, maxLength: 64 }).map((b) => Buffer.from(b.map((x) => x || 1))),
  fc.constant(Buffer.alloc(4095, 'x')),
);
const contents = fc.oneof(
  { weight: 30, arbitrary: fc.uint8Array({ maxLength: 64 }).map((b) => Buffer.from(b)) },
  // Bigger than the dumper's direct reads (64 KiB), so that contents span many input chunks.
  { weight: 1, arbitrary: fc.integer({ min: 0, max: 100_000 }).map((n) => Buffer.alloc(n, n & 0xff)) },
);

const { tree } = fc.letrec<{ tree: Tree; file: Tree; symlink: Tree; directory: Tree }>((tie) => ({
  tree: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    tie('file'),
    tie('symlink'),
    tie('directory'),
  ),
  file: fc.record({ type: fc.constant('regular' as const), executable: fc.boolean(), contents }),
  symlink: fc.record({ type: fc.constant('symlink' as const), target }),
  directory: fc
    .uniqueArray(fc.tuple(entryName, tie('tree')), { selector: ([n]) => n.toString('hex'), maxLength: 5 })
    .map((entries) => ({
      type: 'directory' as const,
      entries: entries.sort(([a], [b]) => Buffer.compare(a, b)),
    })),
}));

/** Directories of a tree, with a function that rebuilds the tree with one of them replaced. */
function directories(t: Tree): Array<{ dir: Tree & { type: 'directory' }; replace: (d: Tree) => Tree }> {
  if (t.type !== 'directory') return [];
  const found: Array<{ dir: Tree & { type: 'directory' }; replace: (d: Tree) => Tree }> = [
    { dir: t, replace: (d) => d },
  ];
  t.entries.forEach(([name, child], i) => {
    for (const inner of directories(child)) {
      found.push({
        dir: inner.dir,
        replace: (d) => ({ type: 'directory', entries: t.entries.with(i, [name, inner.replace(d)]) }),
      });
    }
  });
  return found;
}

const hostileName = fc
  .constantFrom('', '.', '..', 'a/b', '/', '../x', 'a\0b', '\0', 'n'.repeat(256))
  .map((s) => Buffer.from(s));
const hostileTarget = fc.constantFrom('', '\0', 'a\0b', 'x'.repeat(4096)).map((s) => Buffer.from(s));

type Entries = ReadonlyArray<readonly [Buffer, Tree]>;
/** Edits of a directory's entry list that make the archive invalid (or, by chance, keep it valid). */
type DirEdit = (entries: Entries) => Entries;
const dirEdit: fc.Arbitrary<DirEdit> = fc.oneof(
  fc.tuple(fc.nat(), fc.nat()).map(([a, b]) => (es: Entries) => {
    if (es.length < 2) return es;
    const i = a % es.length;
    const j = b % es.length;
    return es.with(i, es[j]!).with(j, es[i]!); // reordered
  }),
  fc
    .nat()
    .map((a) => (es: Entries) => (es.length === 0 ? es : es.toSpliced(a % es.length, 0, es[a % es.length]!))), // duplicated
  fc.tuple(fc.nat(), fc.nat()).map(
    ([a, b]) =>
      (es: Entries) =>
        es.length === 0 ? es : es.with(a % es.length, [es[b % es.length]![0], es[a % es.length]![1]]), // same name twice
  ),
  fc.tuple(fc.nat(), hostileName, tree).map(
    ([a, name, child]) =>
      (es: Entries) =>
        es.toSpliced(a % (es.length + 1), 0, [name, child]),
  ),
  fc.tuple(fc.nat(), hostileTarget).map(
    ([a, t]) =>
      (es: Entries) =>
        es.toSpliced(a % (es.length + 1), 0, [Buffer.from('l'), { type: 'symlink', target: t }]),
  ),
  // A symlink and then the same name as a directory with a file in it: a write through the link.
  fc.constant(
    (es: Entries): Entries => [
      ...es,
      [Buffer.from('zz'), { type: 'symlink', target: Buffer.from('..') }],
      [
        Buffer.from('zz'),
        {
          type: 'directory',
          entries: [
            [Buffer.from('escaped'), { type: 'regular', executable: false, contents: Buffer.from('x') }],
          ],
        },
      ],
    ],
  ),
);

/** A tree with one directory's entries edited (the root wrapped in a directory when it is not one). */
const mutatedTree = fc.tuple(tree, fc.nat(), dirEdit).map(([t, at, edit]) => {
  const root: Tree = t.type === 'directory' ? t : { type: 'directory', entries: [[Buffer.from('r'), t]] };
  const dirs = directories(root);
  const { dir, replace } = dirs[at % dirs.length]!;
  return new Nar(encode(replace({ type: 'directory', entries: edit(dir.entries) })));
});

const u64 = (n: bigint) => {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(n);
  return b;
};
const hostileLength = fc.oneof(
  fc.constantFrom(0n, 1n, 7n, 8n, 16n, 17n, 255n, 256n, 4096n, 2n ** 31n, 2n ** 32n - 1n, 2n ** 32n),
  fc.constantFrom(2n ** 53n - 1n, 2n ** 53n, 2n ** 63n, 2n ** 64n - 1n),
  fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }),
);

/** Byte-level edits of an archive. */
type ByteEdit = (b: Buffer) => Buffer;
const byteEdit: fc.Arbitrary<ByteEdit> = fc.oneof(
  fc.nat().map((at) => (b: Buffer) => b.subarray(0, at % (b.length + 1))), // truncated
  fc.tuple(fc.nat(), fc.integer({ min: 1, max: 255 })).map(([at, x]) => (b: Buffer) => {
    const c = Buffer.from(b);
    if (c.length > 0) c[at % c.length]! ^= x; // one byte flipped
    return c;
  }),
  fc.tuple(fc.nat(), fc.uint8Array({ minLength: 1, maxLength: 24 })).map(([at, bytes]) => (b: Buffer) => {
    const i = at % (b.length + 1);
    return Buffer.concat([b.subarray(0, i), bytes, b.subarray(i)]); // random bytes spliced in
  }),
  fc.tuple(fc.nat(), fc.nat({ max: 64 })).map(([at, n]) => (b: Buffer) => {
    const i = at % (b.length + 1);
    return Buffer.concat([b.subarray(0, i), b.subarray(i + n)]); // a range deleted
  }),
  fc.tuple(fc.nat(), fc.nat(), fc.nat({ max: 96 })).map(([from, to, n]) => (b: Buffer) => {
    const i = from % (b.length + 1);
    const j = to % (b.length + 1);
    return Buffer.concat([b.subarray(0, j), b.subarray(i, i + n), b.subarray(j)]); // a range copied elsewhere
  }),
  fc.tuple(fc.nat(), fc.nat(), fc.integer({ min: 1, max: 6 })).map(([x, y, words]) => (b: Buffer) => {
    // Two 8-byte-aligned ranges swapped: fields reordered.
    const n = Math.floor(b.length / 8);
    if (n < 2 * words) return b;
    let [i, j] = [(x % (n - words + 1)) * 8, (y % (n - words + 1)) * 8];
    if (i > j) [i, j] = [j, i];
    if (j - i < words * 8) return b;
    const w = words * 8;
    return Buffer.concat([
      b.subarray(0, i),
      b.subarray(j, j + w),
      b.subarray(i + w, j),
      b.subarray(i, i + w),
      b.subarray(j + w),
    ]);
  }),
  fc.tuple(fc.nat(), hostileLength).map(([at, n]) => (b: Buffer) => {
    // An 8-byte word (most are lengths) overwritten with an absurd or off-by-some length.
    const words = Math.floor(b.length / 8);
    if (words === 0) return b;
    const c = Buffer.from(b);
    u64(n).copy(c, (at % words) * 8);
    return c;
  }),
  fc.uint8Array({ minLength: 1, maxLength: 16 }).map((bytes) => (b: Buffer) => Buffer.concat([b, bytes])), // trailing data
);
const mutatedBytes = fc
  .tuple(tree, fc.array(byteEdit, { minLength: 1, maxLength: 3 }))
  .map(([t, edits]) => new Nar(edits.reduce((b, e) => e(b), encode(t))));

const chunkSize = fc.constantFrom(1, 3, 8, 13, 64, 4096, 1 << 30);

// --- Checks ----------------------------------------------------------------------------------

/** The error check shared by parser and unpacker: INVALID_NAR with a one-line, bounded message. */
function assertInvalidNar(err: unknown): void {
  if (!isCairnError(err, 'INVALID_NAR')) {
    assert.fail(`expected INVALID_NAR, got ${(err as Error)?.stack ?? String(err)}`);
  }
  assert.match(err.message, /^Cannot unpack NAR: .+ \(.+\)$/s);
  // Names and targets come from the archive: they must not carry line breaks or escapes into logs.
  assert.doesNotMatch(err.message, /\p{Cc}/u, `control character in ${JSON.stringify(err.message)}`);
  assert.ok(err.message.length < 1500, `message of ${err.message.length} characters`);
}

/**
 * Parses `bytes` and rebuilds the tree from the events; checks that the tree's archive is
 * exactly `bytes` (the parser accepts only canonical archives) and that each file's offset is
 * where its contents are. Returns undefined when the parser rejects the archive.
 */
async function parsed(bytes: Buffer, size: number): Promise<Tree | undefined> {
  type Dir = { type: 'directory'; entries: Array<readonly [Buffer, Tree]> };
  // Events come depth first: the parent of a node at depth d is the last directory seen at d - 1.
  const open: Array<{ dir: Dir; name: Buffer | undefined }> = [];
  let root: Tree | undefined;
  let file: { parts: Buffer[]; offset: number; size: number; done: (contents: Buffer) => void } | undefined;
  const finish = () => {
    if (!file) return;
    const body = Buffer.concat(file.parts);
    assert.equal(body.length, file.size);
    assert.deepEqual(body, bytes.subarray(file.offset, file.offset + file.size));
    file.done(body);
    file = undefined;
  };
  try {
    for await (const event of parseNar(chunked(bytes, size))) {
      if (event.type === 'contents') {
        file!.parts.push(Buffer.from(event.chunk));
        continue;
      }
      finish();
      let node: Tree;
      const depth = event.path.length;
      if (event.type === 'directory') {
        const dir: Dir = { type: 'directory', entries: [] };
        open.length = depth;
        open.push({ dir, name: event.path.at(-1) });
        node = dir;
      } else if (event.type === 'symlink') {
        node = { type: 'symlink', target: Buffer.from(event.target) };
      } else {
        const regular = { type: 'regular' as const, executable: event.executable, contents: Buffer.alloc(0) };
        file = {
          parts: [],
          offset: event.offset,
          size: event.size,
          done: (c) => Object.assign(regular, { contents: c }),
        };
        node = regular;
      }
      if (depth === 0) {
        assert.equal(root, undefined, 'two roots');
        root = node;
      } else {
        const parent = open[depth - 1];
        assert.ok(parent, `no parent directory at depth ${depth - 1}`);
        if (depth > 1)
          assert.ok(parent.name?.equals(event.path.at(-2)!), 'path does not go through its parent');
        parent.dir.entries.push([Buffer.from(event.path.at(-1)!), node]);
      }
    }
  } catch (err) {
    assertInvalidNar(err);
    return undefined;
  }
  finish();
  assert.ok(root, 'no root');
  assert.ok(encode(root).equals(bytes), 'accepted an archive that is not the canonical NAR of its tree');
  return root;
}

async function collect(source: AsyncIterable<Buffer>): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const part of source) parts.push(part);
  return Buffer.concat(parts);
}

/**
 * Unpacks `bytes` to `<root>/parent/out` and checks the outcome agrees with the parser's: the
 * tree dumps back to the same bytes, or INVALID_NAR and an empty parent; nothing else in root.
 */
async function unpacked(bytes: Buffer, size: number, valid: boolean): Promise<void> {
  const root = await mkdtemp(join(tmpdir(), 'cairn-fuzz-nar-'));
  try {
    const parent = join(root, 'parent');
    await mkdir(parent);
    const target = join(parent, 'out');
    let done = false;
    try {
      await unpackNar(chunked(bytes, size), target);
      done = true;
    } catch (err) {
      assertInvalidNar(err);
    }
    assert.equal(done, valid, done ? 'unpacked an archive the parser rejects' : 'rejected a valid archive');
    if (done)
      assert.ok((await collect(dumpNar(target))).equals(bytes), 'the unpacked tree dumps to other bytes');
    assert.deepEqual(await readdir(parent), done ? ['out'] : []);
    assert.deepEqual(await readdir(root), ['parent']);
  } finally {
    await rm(root, { recursive: true, force: true });
  }
}

describe('parseNar under fuzzing', () => {
  it('yields the tree of every valid archive, in any chunking', async () => {
    await fc.assert(
      fc.asyncProperty(tree, chunkSize, async (t, size) => {
        assert.ok(await parsed(encode(t), size), 'rejected a valid archive');
      }),
      params(800),
    );
  });

  it('yields a canonical tree or throws INVALID_NAR for byte-mutated archives', async (t) => {
    let accepted = 0;
    await fc.assert(
      fc.asyncProperty(mutatedBytes, chunkSize, async (nar, size) => {
        if (await parsed(nar.bytes, size)) accepted++;
      }),
      params(3_000),
    );
    t.diagnostic(`${accepted} of 3000 byte-mutated archives were still valid`);
  });

  it('yields a canonical tree or throws INVALID_NAR for unsorted, duplicate and hostile entries', async (t) => {
    let accepted = 0;
    await fc.assert(
      fc.asyncProperty(mutatedTree, chunkSize, async (nar, size) => {
        if (await parsed(nar.bytes, size)) accepted++;
      }),
      params(1_500),
    );
    t.diagnostic(`${accepted} of 1500 archives with edited entries were still valid`);
  });

  it('handles deep archives of long names (up to and past the nesting limit) with short messages', async () => {
    // A chain of directories ending in a file, truncated somewhere: the error names the path.
    const deep = fc
      .tuple(
        fc.oneof(fc.integer({ min: 1, max: 50 }), fc.integer({ min: 1015, max: 1035 })),
        fc.integer({ min: 1, max: 255 }),
        fc.nat(),
        fc.boolean(),
      )
      .map(([depth, length, cut, truncate]) => {
        let t: Tree = { type: 'regular', executable: false, contents: Buffer.from('leaf') };
        for (let i = 0; i < depth; i++) t = { type: 'directory', entries: [[Buffer.alloc(length, 'n'), t]] };
        const bytes = encode(t);
        return { depth, nar: new Nar(truncate ? bytes.subarray(0, cut % bytes.length) : bytes) };
      });
    await fc.assert(
      fc.asyncProperty(deep, chunkSize, async ({ depth, nar }, size) => {
        const start = performance.now();
        const tree = await parsed(nar.bytes, size);
        if (depth > 1024) assert.equal(tree, undefined, 'accepted nesting past the limit');
        assert.ok(performance.now() - start < 2_000, `${performance.now() - start} ms`);
      }),
      params(25),
    );
  });

  it('throws INVALID_NAR for arbitrary bytes, with or without the magic', async () => {
    const magic = encodeNarString('nix-archive-1');
    const bytes = fc.oneof(
      fc.uint8Array({ maxLength: 300 }).map((b) => new Nar(Buffer.from(b))),
      fc.uint8Array({ maxLength: 300 }).map((b) => new Nar(Buffer.concat([magic, b]))),
    );
    await fc.assert(
      fc.asyncProperty(bytes, chunkSize, async (nar, size) => void (await parsed(nar.bytes, size))),
      params(3_000),
    );
  });
});

describe('unpackNar under fuzzing', () => {
  it('unpacks valid archives to trees that dump to the same bytes', async () => {
    await fc.assert(
      fc.asyncProperty(tree, chunkSize, async (t, size) => unpacked(encode(t), size, true)),
      params(150),
    );
  });

  it('unpacks a mutated archive exactly when the parser accepts it, and otherwise leaves nothing', async (t) => {
    const mutant = fc.oneof(mutatedBytes, mutatedTree);
    let valid = 0;
    await fc.assert(
      fc.asyncProperty(mutant, chunkSize, async ({ bytes }, size) => {
        const ok = (await parsed(bytes, size)) !== undefined;
        if (ok) valid++;
        await unpacked(bytes, size, ok);
      }),
      params(250),
    );
    t.diagnostic(`${valid} of 250 mutated archives unpacked, the others left nothing behind`);
  });
});
