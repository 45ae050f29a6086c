import assert from 'node:assert/strict';
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, readdir, readFile, readlink, rename, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { delimiter, join, relative } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { type DeployWorld, deployWorld, plainPackage } from '../helpers/deploy-fixtures.ts';
import { nixEnv, RUN_TAG } from '../helpers/nix.ts';
import { cli, startTestServer, type TestServer } from '../helpers/server.ts';
import { freePort, spawnServer } from '../helpers/server-process.ts';

/**
 * The package as users get it: `npm pack`, `npm install -g` of the tarball into a fresh prefix,
 * and the installed `cairn` run as on a machine that has Node.js and nix and nothing of this
 * checkout. The install skips dependencies' install scripts: better-sqlite3's would fetch a binary
 * from GitHub or compile C++, and the agent must need neither.
 */
const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const execFileAsync = promisify(execFile);

/** The environment of a user's shell: no npm lifecycle variables, no node_modules/.bin on PATH. */
function cleanEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(nixEnv(extra))) {
    if (k.startsWith('npm_') && k !== 'npm_config_cache' && k !== 'npm_config_registry') continue;
    env[k] = v;
  }
  env.PATH = (env.PATH ?? '')
    .split(delimiter)
    .filter((p) => !p.includes('node_modules'))
    .join(delimiter);
  return env;
}

async function npm(args: readonly string[], cwd: string): Promise<string> {
  try {
    const { stdout } = await execFileAsync('npm', [...args], {
      cwd,
      env: cleanEnv(),
      maxBuffer: 64 * 1024 * 1024,
      encoding: 'utf8',
    });
    return stdout;
  } catch (err) {
    const e = err as { stdout?: string; stderr?: string; message: string };
    throw new Error(`npm ${args.join(' ')} failed: ${e.message}\n${e.stdout ?? ''}${e.stderr ?? ''}`);
  }
}

/** Files of a directory tree, relative to it, skipping `node_modules`. */
async function files(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true });
  return entries
    .filter((e) => e.isFile())
    .map((e) => relative(dir, join(e.parentPath, e.name)))
    .filter((f) => !f.startsWith('node_modules'))
    .sort();
}

describe('the npm package (npm pack, npm install -g of the tarball)', { timeout: 180_000 }, () => {
  let tmp: string;
  let cairn: string;
  let packageDir: string;
  let server: TestServer;
  let world: DeployWorld;
  let agent: ChildProcess | undefined;

  before(async () => {
    tmp = await mkdtemp(join(tmpdir(), 'cairn-npm-pack-'));
    // npm pack runs `prepare`, which builds the bundle, as `npm publish` would.
    const [, started] = await Promise.all([
      npm(['pack', '--pack-destination', tmp], ROOT),
      startTestServer(),
    ]);
    server = started;
    world = await deployWorld(server);
    const tarball = (await readdir(tmp)).find((f) => f.endsWith('.tgz'));
    assert.ok(tarball, `npm pack left no tarball in ${tmp}`);
    const prefix = join(tmp, 'prefix');
    await npm(
      [
        'install',
        '--global',
        '--prefix',
        prefix,
        '--prefer-offline',
        '--ignore-scripts',
        '--no-audit',
        '--no-fund',
        join(tmp, tarball),
      ],
      tmp,
    );
    cairn = join(prefix, 'bin', 'cairn');
    packageDir = join(prefix, 'lib', 'node_modules', 'cairn-deploy');
  });

  after(async () => {
    if (agent && agent.exitCode === null && agent.signalCode === null) {
      agent.kill('SIGTERM');
      await once(agent, 'exit');
    }
    await server?.stop();
    if (tmp) await rm(tmp, { recursive: true, force: true });
  });

  it('ships the bundle and its entry point, not the sources', async () => {
    const shipped = await files(packageDir);
    for (const f of ['bin/cairn.js', 'dist/cairn.mjs', 'dist/cairn.mjs.map', 'package.json']) {
      assert.ok(shipped.includes(f), `the package lacks ${f}: ${shipped.join(', ')}`);
    }
    assert.deepEqual(
      shipped.filter((f) => f.startsWith('src/') || f.startsWith('test/') || f.endsWith('.ts')),
      [],
    );
  });

  it('installs a cairn that prints its version', async () => {
    const { stdout } = await execFileAsync(cairn, ['--version'], { cwd: tmp, env: cleanEnv() });
    const { version } = JSON.parse(await readFile(join(ROOT, 'package.json'), 'utf8')) as { version: string };
    assert.equal(stdout.trim(), version);
  });

  it('runs cairn server, which serves the dashboard script and stylesheet carried in the bundle', async () => {
    // The install skipped better-sqlite3's build (see above): lend the installed server this
    // checkout's built one.
    const sqlite = join(packageDir, 'node_modules', 'better-sqlite3');
    await rm(sqlite, { recursive: true, force: true });
    await symlink(join(ROOT, 'node_modules', 'better-sqlite3'), sqlite);
    const installed = await spawnServer({ port: await freePort(), dataDir: join(tmp, 'server'), cairn });
    try {
      for (const name of ['app.js', 'app.css']) {
        const res = await fetch(`${installed.url}/static/${name}`);
        assert.equal(res.status, 200);
        assert.equal(
          await res.text(),
          await readFile(join(ROOT, 'src/server/dashboard/assets', name), 'utf8'),
        );
      }
    } finally {
      await installed.kill('SIGTERM');
    }
  });

  it('runs cairn deploy agent with no npm module beside the bundle, and it deploys', async () => {
    // The agent must need Node.js and nix only: take every dependency away.
    await rename(join(packageDir, 'node_modules'), join(packageDir, 'node_modules.away'));
    const name = `packed-${RUN_TAG}`;
    const paths = await world.publish([plainPackage(name)]);
    const path = paths.get(name)!;
    const token = await world.createAgent('packed');
    const stateDir = join(tmp, 'agent-state');
    const profile = join(world.profiles, 'packed');
    const child = spawn(cairn, ['deploy', 'agent', 'packed', profile, '--state-dir', stateDir], {
      cwd: tmp,
      env: cleanEnv({
        CAIRN_SERVER: server.url,
        CAIRN_AGENT_TOKEN: token,
        XDG_CACHE_HOME: join(tmp, 'xdg-cache'),
      }),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    agent = child;
    let log = '';
    let timer: NodeJS.Timeout | undefined;
    await new Promise<void>((resolve, reject) => {
      const onData = (d: Buffer) => {
        log += d.toString();
        if (/connected to/.test(log)) resolve();
      };
      child.stdout.on('data', onData);
      child.stderr.on('data', onData);
      child.once('exit', (code) => reject(new Error(`the installed agent exited with ${code}:\n${log}`)));
      timer = setTimeout(
        () => reject(new Error(`the installed agent did not connect in 30 s:\n${log}`)),
        30_000,
      );
    }).finally(() => clearTimeout(timer));

    const file = join(tmp, 'deploy.json');
    await writeFile(file, JSON.stringify({ agents: { packed: path } }));
    const r = await cli(['deploy', 'activate', file], world.env);
    assert.equal(r.code, 0, `${r.stdout}${r.stderr}\nagent log:\n${log}`);
    assert.match(r.stdout, new RegExp(`packed\\s+\\| activated ${name}`));
    assert.equal(await readlink(join(world.profiles, await readlink(profile))), path);
  });
});
