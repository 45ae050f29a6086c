import assert from 'node:assert/strict';
import { access, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { JournalFile } from '../../src/agent/journal-file.ts';

describe('JournalFile.read', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'cairn-journal-'));
  });
  after(() => rm(dir, { recursive: true, force: true }));

  it('moves aside a journal that does not fit its schema, naming every bad field', async () => {
    const journal = new JournalFile(dir);
    await writeFile(journal.path, JSON.stringify({ version: 'two', switched: 'yes' }));
    const read = await journal.read();
    assert.equal(read.kind, 'corrupt');
    if (read.kind !== 'corrupt') return;
    assert.match(read.reason, /version: /);
    assert.match(read.reason, /switched: /);
    assert.match(read.reason, /reported: /);
    await access(read.movedTo);
    await assert.rejects(access(journal.path), { code: 'ENOENT' });
  });
});

describe('JournalFile.read: the activation unit', () => {
  it('moves aside a journal whose activation unit has no name', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'cairn-journal-unit-'));
    const journal = new JournalFile(dir);
    await writeFile(
      journal.path,
      JSON.stringify({
        version: 2,
        owner: { serverId: null, workspace: null, agent: 'a' },
        deployment: {
          id: '1',
          storePath: '/nix/store/00000000000000000000000000000000-x',
          rollbackScript: null,
          healthChecks: [],
          confirmTimeoutSeconds: 60,
          exit4: 'fail',
        },
        phase: 'activate',
        previous: null,
        switched: true,
        activation: {
          storePath: '/nix/store/x',
          logFile: '/l',
          statusFile: '/s',
          pid: null,
          unit: { name: '', bootId: null },
        },
        failure: null,
        result: null,
        reported: false,
        updatedAt: 0,
      }),
    );
    const read = await journal.read();
    assert.equal(read.kind, 'corrupt', JSON.stringify(read));
    if (read.kind === 'corrupt') assert.match(read.reason, /activation\.unit\.name/);
    await rm(dir, { recursive: true, force: true });
  });
});
