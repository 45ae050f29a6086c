import assert from 'node:assert/strict';
import { mkdtemp, readdir, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { DeploymentQueue } from '../../src/agent/deployment-queue.ts';
import { JournalFile } from '../../src/agent/journal-file.ts';
import { ResultOutbox } from '../../src/agent/result-outbox.ts';
import { newJournal } from '../../src/agent/run-deployment.ts';
import type { JournalOwner } from '../../src/protocol/agent-journal.ts';
import type { AgentMessage, DesiredDeployment } from '../../src/protocol/agent-protocol.ts';

const A: JournalOwner = { serverId: 'a'.repeat(32), workspace: 'default', agent: 'web1' };
const B: JournalOwner = { serverId: 'b'.repeat(32), workspace: 'default', agent: 'web1' };
const desired = (id: string): DesiredDeployment => ({
  id,
  storePath: `/nix/store/${'c'.repeat(32)}-x`,
  rollbackScript: null,
  exit4: 'fail',
  healthChecks: [],
  confirmTimeoutSeconds: 30,
  rollback: false,
});

describe('JournalFile', () => {
  it('writes and reads back a version 2 journal with its owner', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'cairn-journal-'));
    const file = new JournalFile(dir);
    const j = newJournal(desired('1'), A);
    await file.write(j);
    const read = await file.read();
    assert.equal(read.kind, 'ok');
    assert.deepEqual(read.kind === 'ok' && read.journal, j);
    assert.equal(j.version, 2);
  });

  it('sets aside, unread, a journal of another format version, saying why', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'cairn-journal-'));
    const old = { version: 1, deployment: desired('1'), phase: 'done' };
    await writeFile(join(dir, 'journal.json'), JSON.stringify(old));
    const read = await new JournalFile(dir).read();
    assert.equal(read.kind, 'foreign');
    assert.match(read.kind === 'foreign' ? read.reason : '', /journal format 1, not 2/);
    assert.match(read.kind === 'foreign' ? read.movedTo : '', /journal\.json\.foreign-\d+$/);
    assert.deepEqual(await readdir(dir), [read.kind === 'foreign' ? read.movedTo.slice(dir.length + 1) : '']);
    assert.deepEqual((await new JournalFile(dir).read()).kind, 'none');
  });

  it('sets a journal aside on request, keeping it for inspection', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'cairn-journal-'));
    const file = new JournalFile(dir);
    await file.write(newJournal(desired('1'), A));
    const movedTo = await file.setAside();
    assert.equal(JSON.parse(await readFile(movedTo, 'utf8')).owner.serverId, A.serverId);
    assert.equal((await file.read()).kind, 'none');
  });
});

describe('DeploymentQueue', () => {
  it("runs another server's deployment of an id this agent finished for a first server", async () => {
    const ran: string[] = [];
    const queue = new DeploymentQueue(
      async (d, running) => {
        ran.push(`${running.owner.serverId?.[0]}:${d.id}`);
      },
      { stopping: () => false },
    );
    queue.finish(A, '1');
    queue.desire(desired('1'), A);
    await queue.idle();
    assert.deepEqual(ran, []);
    queue.desire(desired('1'), B);
    await queue.idle();
    assert.deepEqual(ran, ['b:1']);
  });
});

describe('ResultOutbox', () => {
  const result = (id: string) => ({
    deploymentId: id,
    state: 'succeeded' as const,
    step: null,
    reason: null,
    rebootRequired: false,
  });

  it('sends a result only once a welcome names its server, and never to another server', async () => {
    const sent: AgentMessage[] = [];
    const ids = () => sent.map((m) => (m.type === 'result' ? m.result.deploymentId : m.type));
    const outbox = new ResultOutbox({
      send: (m) => {
        sent.push(m);
        return true;
      },
      observe: async () => ({}) as never,
    });
    outbox.add(result('1'), A);
    await outbox.resend();
    assert.deepEqual(sent, [], 'nothing before a welcome');
    outbox.welcomed(B);
    await outbox.resend();
    assert.equal(await outbox.report(result('2'), A), false);
    assert.deepEqual(sent, [], "nothing of A's to B");
    outbox.connectionLost();
    outbox.welcomed(A);
    await outbox.resend();
    assert.deepEqual(ids(), ['1', '2']);
  });
});
