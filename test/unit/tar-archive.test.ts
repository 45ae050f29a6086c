import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, open, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import {
  readTarEntries,
  readTarEntry,
  type TarEntry,
  TarFormatError,
  tarEnd,
  tarHeader,
  tarPadding,
} from '../../src/lib/tar-archive.ts';

const execFileAsync = promisify(execFile);

/** An archive of `files`, as the backup writes one. */
function archive(files: ReadonlyArray<[string, Buffer]>): Buffer {
  return Buffer.concat([
    ...files.flatMap(([name, body]) => [
      tarHeader(name, body.length, Date.UTC(2026, 0, 1)),
      body,
      tarPadding(body.length),
    ]),
    tarEnd(),
  ]);
}

async function entriesOf(file: string): Promise<Array<TarEntry & { body: string }>> {
  const handle = await open(file, 'r');
  try {
    const out: Array<TarEntry & { body: string }> = [];
    const { size } = await handle.stat();
    for await (const e of readTarEntries(handle, size)) {
      const chunks: Buffer[] = [];
      for await (const c of readTarEntry(handle, e)) chunks.push(c);
      out.push({ ...e, body: Buffer.concat(chunks).toString() });
    }
    return out;
  } finally {
    await handle.close();
  }
}

describe('tar-archive', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'cairn-tar-'));
  });
  after(() => rm(dir, { recursive: true, force: true }));

  // A realisation's name, as a local blob store keeps it: longer than ustar's 100-byte name field.
  const long = `cairn-backup/blobs/caches/12/realisations/sha256:${'a'.repeat(64)}!out.doi`;

  it('writes what the system tar reads, long names split into prefix and name', async () => {
    const file = join(dir, 'a.tar');
    await writeFile(
      file,
      archive([
        ['cairn-backup/x', Buffer.from('hello\n')],
        [long, Buffer.from('{}')],
        ['cairn-backup/empty', Buffer.alloc(0)],
      ]),
    );
    const { stdout } = await execFileAsync('tar', ['-tf', file]);
    assert.deepEqual(stdout.trim().split('\n'), ['cairn-backup/x', long, 'cairn-backup/empty']);
    const { stdout: body } = await execFileAsync('tar', ['-xOf', file, long]);
    assert.equal(body, '{}');
  });

  it('reads back the names, sizes and contents it wrote', async () => {
    const file = join(dir, 'b.tar');
    await writeFile(
      file,
      archive([
        ['cairn-backup/x', Buffer.from('hello\n')],
        [long, Buffer.alloc(70_000, 'z')],
      ]),
    );
    const entries = await entriesOf(file);
    assert.deepEqual(
      entries.map((e) => [e.name, e.size, e.body.length]),
      [
        ['cairn-backup/x', 6, 6],
        [long, 70_000, 70_000],
      ],
    );
    assert.equal(entries[0]!.body, 'hello\n');
  });

  it('refuses a header whose checksum does not match, and an archive without its end', async () => {
    const bytes = archive([['cairn-backup/x', Buffer.from('hello\n')]]);
    const damaged = Buffer.from(bytes);
    damaged[3] = 0x41;
    await writeFile(join(dir, 'c.tar'), damaged);
    await assert.rejects(
      entriesOf(join(dir, 'c.tar')),
      (e) => e instanceof TarFormatError && /damaged header at byte 0/.test(e.message),
    );
    await writeFile(join(dir, 'd.tar'), bytes.subarray(0, bytes.length - 1024));
    await assert.rejects(entriesOf(join(dir, 'd.tar')), /before the archive's end marker/);
  });

  it('writes a size beyond 8 GiB in base-256, and reads it back', async () => {
    const size = 9 * 1024 ** 3;
    const header = tarHeader('cairn-backup/database.sqlite', size, 0);
    assert.equal(header[124], 0x80);
    await writeFile(join(dir, 'e.tar'), header);
    // Only the header is there: the reader says how large the member it cannot find is.
    await assert.rejects(
      entriesOf(join(dir, 'e.tar')),
      new RegExp(`inside the member cairn-backup/database.sqlite \\(${size} bytes\\)`),
    );
  });

  it('refuses a name that cannot be split to fit', () => {
    assert.throws(() => tarHeader(`cairn-backup/${'x'.repeat(120)}`, 0, 0), /the name is too long/);
  });
});
