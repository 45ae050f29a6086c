import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { signInToDashboard } from '../helpers/dashboard-session.ts';
import { freePort, spawnServer } from '../helpers/server-process.ts';

const MAIN = fileURLToPath(new URL('../../src/main.ts', import.meta.url));

/**
 * The first start as someone trying Cairn sees it: `cairn server` on a terminal (a real
 * pseudo-terminal from util-linux's `script`) writes readable lines and says where the dashboard
 * is and which file holds the token to sign in with; piped, it writes JSON lines.
 */
describe('cairn server on a terminal', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'cairn-tty-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('writes readable lines and names the dashboard and the admin token file on its first start', async () => {
    const port = await freePort();
    const dataDir = join(dir, 'tty');
    const command = `exec ${process.execPath} --import tsx ${MAIN} server --listen 127.0.0.1:${port} --data-dir ${dataDir}`;
    const child = spawn('script', ['-qfec', command, '/dev/null'], {
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true,
    });
    let out = '';
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
    });
    try {
      const deadline = Date.now() + 30_000;
      while (!/sign in to the dashboard/.test(out)) {
        assert.ok(Date.now() < deadline, `no first-start line within 30 s:\n${out}`);
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
      // A terminal turns \n into \r\n.
      const lines = out.replace(/\r/g, '').split('\n');
      assert.ok(
        lines.some((l) =>
          new RegExp(
            `^\\d\\d:\\d\\d:\\d\\d INFO  cairn server listening url=http://127\\.0\\.0\\.1:${port} `,
          ).test(l),
        ),
        out,
      );
      const first = lines.find((l) => l.includes('sign in to the dashboard'))!;
      assert.match(
        first,
        new RegExp(`dashboard=http://127\\.0\\.0\\.1:${port}/ tokenFile=${dataDir}/admin-token`),
      );
      assert.doesNotMatch(out, /"level":/);
      // The file it names holds a token that signs in to the dashboard.
      const token = (await readFile(join(dataDir, 'admin-token'), 'utf8')).trim();
      const session = await signInToDashboard(`http://127.0.0.1:${port}`, token);
      assert.ok(session.cookie);
    } finally {
      process.kill(-child.pid!, 'SIGTERM');
    }
  });

  it('writes JSON lines when its output is not a terminal, and refuses an unknown --log-format', async () => {
    const server = await spawnServer({
      port: await freePort(),
      dataDir: join(dir, 'pipe'),
      logLevel: 'info',
    });
    try {
      assert.ok(server.lines.length > 0);
      for (const line of server.lines) assert.equal(typeof JSON.parse(line).msg, 'string', line);
    } finally {
      await server.kill('SIGTERM');
    }
    await assert.rejects(
      spawnServer({ port: await freePort(), dataDir: join(dir, 'bad'), args: ['--log-format', 'fancy'] }),
      /Cannot use --log-format: expected json, pretty or auto \(fancy\)/,
    );
  });
});
