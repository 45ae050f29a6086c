import assert from 'node:assert/strict';
import { once } from 'node:events';
import { access, mkdtemp, readFile } from 'node:fs/promises';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { startAgent } from '../helpers/agent-process.ts';
import { darwinPackage, profileTarget } from '../helpers/deploy-fixtures.ts';
import { useDeployTestbed } from '../helpers/deploy-testbed.ts';
import { RUN_TAG } from '../helpers/nix.ts';
import { cli } from '../helpers/server.ts';

/**
 * nix-darwin's activate-user, as darwin-rebuild handles it. Fake: the closures are scripts (this
 * machine is Linux, not a Mac); the legacy activate-user records the user it runs as. These tests
 * run as root, so the primary user that runs it directly is root; another user needs sudo, which
 * this machine lacks, so that case shows the refusal.
 */
describe('nix-darwin activate-user: the stub, the primary user, the refusal', () => {
  const bed = useDeployTestbed();
  const me = userInfo();
  const exists = (p: string) =>
    access(p).then(
      () => true,
      () => false,
    );
  const lastDeployment = async (agentName: string) => {
    const r = await cli(['deploy', 'list', '--agent', agentName, '--json'], bed.world.env);
    return (JSON.parse(r.stdout) as Array<{ state: string; step: string | null; reason: string | null }>)[0]!;
  };

  it('skips the stub by its marker line and runs a legacy activate-user as the primary user', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'cairn-darwin-'));
    const record = join(dir, 'record');
    const paths = await bed.world.publish([
      darwinPackage(`dw-stub-${RUN_TAG}`, record, { userStub: true }),
      // Its warning mentions "deprecated" and "no longer": only the marker line tells a stub.
      darwinPackage(`dw-legacy-${RUN_TAG}`, record),
    ]);
    const stub = paths.get(`dw-stub-${RUN_TAG}`)!;
    const legacy = paths.get(`dw-legacy-${RUN_TAG}`)!;
    await bed.agent('dwuser', { env: { CAIRN_AGENT_PRIMARY_USER: me.username } });
    assert.equal((await bed.activate({ agents: { dwuser: stub } })).code, 0);
    const r = await bed.activate({ agents: { dwuser: legacy } });
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.deepEqual((await readFile(record, 'utf8')).trim().split('\n'), [
      `${stub} activate HOME=${me.homedir}`,
      `${legacy} activate-user user=${me.username} HOME=${me.homedir}`,
      `${legacy} activate HOME=${me.homedir}`,
    ]);
    assert.equal(await profileTarget(join(bed.world.profiles, 'dwuser')), legacy);
  });

  it('refuses a legacy activate-user without a primary user, before changing anything', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'cairn-darwin-'));
    const record = join(dir, 'record');
    const paths = await bed.world.publish([darwinPackage(`dw-refused-${RUN_TAG}`, record)]);
    const legacy = paths.get(`dw-refused-${RUN_TAG}`)!;
    await bed.agent('dwnouser');
    const r = await bed.activate({ agents: { dwnouser: legacy } });
    assert.equal(r.code, 1, r.stdout + r.stderr);
    const last = await lastDeployment('dwnouser');
    assert.deepEqual(
      [last.state, last.step, last.reason],
      [
        'failed',
        'activate',
        `Cannot activate ${legacy}: its activate-user is a legacy one (nix-darwin before 25.05, without the line "# nix-darwin: deprecated"), which must run as the machine's primary user, as darwin-rebuild runs it with sudo --user; set CAIRN_AGENT_PRIMARY_USER (the module's primaryUser) to that user`,
      ],
    );
    // Nothing ran and the profile was not set.
    assert.equal(await exists(record), false);
    assert.equal(await exists(join(bed.world.profiles, 'dwnouser')), false);
  });

  it('refuses to run it as another user without sudo, saying so', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'cairn-darwin-'));
    const record = join(dir, 'record');
    const paths = await bed.world.publish([darwinPackage(`dw-nosudo-${RUN_TAG}`, record)]);
    const legacy = paths.get(`dw-nosudo-${RUN_TAG}`)!;
    await bed.agent('dwnosudo', { env: { CAIRN_AGENT_PRIMARY_USER: 'nobody' } });
    const r = await bed.activate({ agents: { dwnosudo: legacy } });
    assert.equal(r.code, 1, r.stdout + r.stderr);
    assert.match(
      (await lastDeployment('dwnosudo')).reason ?? '',
      /must run as the machine's primary user, .*; the agent finds no sudo on its PATH to run it as nobody$/,
    );
    assert.equal(await exists(record), false);
  });

  it('refuses to start with a CAIRN_AGENT_PRIMARY_USER that is not a user name', async () => {
    const agent = await startAgent({
      name: 'dwbad',
      profile: join(bed.world.profiles, 'dwbad'),
      server: bed.server.url,
      token: await bed.world.createAgent('dwbad'),
      env: { CAIRN_AGENT_PRIMARY_USER: 'root; rm -rf /' },
    });
    const [code] = (await once(agent.child, 'exit')) as [number | null];
    assert.notEqual(code, 0);
    assert.match(
      agent.lines.join('\n'),
      /CAIRN_AGENT_PRIMARY_USER must be a user name, not "root; rm -rf \/"/,
    );
  });
});
