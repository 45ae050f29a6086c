import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, symlink, unlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { recordSelf, selfChanged } from '../../src/agent/self-upgrade.ts';

describe('selfChanged: the program the agent was started as', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'cairn-self-'));
  });
  after(() => rm(dir, { recursive: true, force: true }));

  it('says why once the program path resolves to another file, and nothing while it does not', async () => {
    for (const v of ['1', '2']) {
      await mkdir(join(dir, v));
      await writeFile(join(dir, v, 'main.js'), `// cairn ${v}\n`);
    }
    // As /run/current-system/sw/bin/cairn: a link a deployment repoints.
    const program = join(dir, 'cairn');
    await symlink(join(dir, '1', 'main.js'), program);
    // No systemd here (no marker directory): only the program is compared.
    const env = { PATH: process.env.PATH, CAIRN_AGENT_SYSTEMD_DIR: join(dir, 'none') };
    const self = await recordSelf(env, { program, stateDir: dir, log: () => {} });
    assert.equal(self.unit, undefined);
    assert.equal(await selfChanged(self, env), undefined);
    await unlink(program);
    await symlink(join(dir, '2', 'main.js'), program);
    assert.equal(
      await selfChanged(self, env),
      `my program ${program} now resolves to ${join(dir, '2', 'main.js')}, not ${join(dir, '1', 'main.js')}`,
    );
  });
});
