import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { freePort } from '../helpers/server-process.ts';

const FLEET = fileURLToPath(new URL('../../bench/fleet.ts', import.meta.url));

/** Runs `npm run bench:fleet -- ARGS` as npm does (node through tsx); its exit code and output. */
function fleet(args: readonly string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', FLEET, ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, FLEET_NO_PIN: '1' },
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => {
      stdout += d.toString();
    });
    child.stderr.on('data', (d: Buffer) => {
      stderr += d.toString();
    });
    // A bench that got past its options would start servers and agents: stop it and say so.
    const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

describe('bench:fleet options', () => {
  it('--help describes --replicas and --database, and starts nothing', async () => {
    const r = await fleet(['--help']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /--replicas N\s+cairn server replicas, 1 to 8 \(default 1\)/);
    assert.match(r.stdout, /--database URL\s+postgres:\/\//);
    assert.doesNotMatch(r.stdout, /^fleet: /m);
  });

  it('refuses a --replicas that is not a whole number from 1 to 8, before starting anything', async () => {
    const bad = ['0', '9', '1.5', '-1', 'two', ''];
    const runs = await Promise.all(
      bad.map((n) =>
        fleet(['--agents', '10', `--replicas=${n}`, '--database', 'postgres://u@127.0.0.1:1/db']),
      ),
    );
    runs.forEach((r, i) => {
      assert.equal(r.code, 2, `--replicas ${bad[i]}: ${r.stdout}${r.stderr}`);
      assert.equal(
        r.stderr.trim(),
        `bench:fleet: --replicas: expected a whole number from 1 to 8, got ${bad[i]} (see --help)`,
      );
      assert.equal(r.stdout, '');
    });
  });

  it('refuses several replicas without a PostgreSQL --database, and a --database that is not PostgreSQL', async () => {
    const [none, mysql, sqlite, broken] = await Promise.all([
      fleet(['--agents', '10', '--replicas', '2']),
      fleet(['--agents', '10', '--replicas', '2', '--database', 'mysql://u@127.0.0.1/db']),
      fleet(['--agents', '10', '--database', 'sqlite:/tmp/x.sqlite']),
      fleet(['--agents', '10', '--database', 'postgres://u@[bad/db']),
    ]);
    assert.equal(none.code, 2, none.stderr);
    assert.match(
      none.stderr,
      /^bench:fleet: --replicas 2: replicas share one PostgreSQL database; add --database/,
    );
    for (const r of [mysql, sqlite, broken]) {
      assert.equal(r.code, 2, r.stderr);
      assert.match(
        r.stderr,
        /^bench:fleet: --database: expected a postgres:\/\/USER@HOST:PORT\/DB URL, got /,
      );
      assert.equal(r.stdout, '');
    }
  });

  it('stops with the reason when the PostgreSQL server of --database cannot be reached', async () => {
    // A port nothing listens on: the connection is refused.
    const port = await freePort();
    const r = await fleet([
      '--agents',
      '10',
      '--replicas',
      '2',
      '--database',
      `postgres://postgres@127.0.0.1:${port}/postgres`,
    ]);
    assert.equal(r.code, 1, r.stdout + r.stderr);
    assert.match(
      r.stderr,
      new RegExp(
        `^bench:fleet: Cannot connect to the PostgreSQL server of --database \\(127\\.0\\.0\\.1:${port}\\): .*ECONNREFUSED`,
      ),
    );
    assert.equal(r.stdout, '');
  });

  it('describes --metrics and --scrapes, and refuses a mode other than fleet or per-agent before starting anything', async () => {
    const help = await fleet(['--help']);
    assert.match(help.stdout, /--metrics MODE\s+time GET \/metrics/);
    assert.match(help.stdout, /--scrapes N\s+with --metrics, scrapes timed each time \(default 40\)/);
    assert.match(
      help.stdout,
      /--scrape-gap MS\s+with --metrics, the pause between two scrapes \(default 250/,
    );
    const [mode, scrapes, gap, staged] = await Promise.all([
      fleet(['--agents', '10', '--metrics', 'all']),
      fleet(['--agents', '10', '--metrics', 'fleet', '--scrapes', '0']),
      fleet(['--agents', '10', '--metrics', 'fleet', '--scrape-gap', '1s']),
      fleet(['--agents', '10', '--metrics', 'fleet', '--staged', '50%,100%']),
    ]);
    assert.equal(mode.code, 2, mode.stdout + mode.stderr);
    assert.equal(
      mode.stderr.trim(),
      'bench:fleet: --metrics: expected fleet or per-agent, got all (see --help)',
    );
    assert.equal(scrapes.code, 2, scrapes.stdout + scrapes.stderr);
    assert.match(scrapes.stderr, /^bench:fleet: --scrapes: expected a whole number from 1 to 10000, got 0/);
    assert.equal(gap.code, 2, gap.stdout + gap.stderr);
    assert.match(
      gap.stderr,
      /^bench:fleet: --scrape-gap: expected a whole number of ms from 0 to 60000, got 1s/,
    );
    assert.equal(staged.code, 2, staged.stdout + staged.stderr);
    assert.match(staged.stderr, /^bench:fleet: --metrics and --staged: choose one/);
    for (const r of [mode, scrapes, gap, staged]) assert.equal(r.stdout, '');
  });
});
