import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';

/**
 * The checks around the test suite itself (scripts/test.sh): a machine without a prerequisite
 * stops `npm test` at once with the line that installs it, and a skipped test that
 * test/expected-skips.txt does not list fails the run.
 */
const ROOT = fileURLToPath(new URL('../../', import.meta.url));

interface Outcome {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
  readonly ms: number;
}

/** Runs a command in the checkout with `env` as its whole environment; never throws. */
function attempt(cmd: string, args: readonly string[], env: NodeJS.ProcessEnv): Promise<Outcome> {
  const started = performance.now();
  return new Promise((resolve) => {
    execFile(cmd, [...args], { cwd: ROOT, env, encoding: 'utf8', timeout: 60_000 }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : 1) : 0;
      resolve({ code, stdout, stderr, ms: performance.now() - started });
    });
  });
}

/**
 * This process's environment as a shell's: without the test runner's mark (with it, a nested
 * `node --test` runs nothing) and the test database (so a run counts as the SQLite one).
 */
function baseEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const env = { ...process.env, ...extra };
  delete env.NODE_TEST_CONTEXT;
  delete env.CAIRN_TEST_DATABASE_URL;
  return env;
}

/** The absolute path of a command on this machine's PATH. */
async function which(cmd: string): Promise<string> {
  const r = await attempt('/bin/sh', ['-c', `command -v ${cmd}`], process.env);
  assert.equal(r.code, 0, `${cmd} is not on PATH`);
  return r.stdout.trim();
}

describe('npm test', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'cairn-npm-test-'));
  });
  after(() => rm(dir, { recursive: true, force: true }));

  it('without Chromium stops in under 10 s with one line naming it and the command that installs it', async () => {
    const missing = join(dir, 'no-such-chromium');
    const r = await attempt('npm', ['test'], baseEnv({ CAIRN_TEST_CHROMIUM: missing }));
    assert.notEqual(r.code, 0, r.stdout);
    assert.ok(r.ms < 10_000, `took ${Math.round(r.ms)} ms`);
    const lines = r.stderr.split('\n').filter((l) => l.startsWith('test: '));
    assert.equal(lines.length, 1, r.stderr);
    assert.match(
      lines[0]!,
      new RegExp(`missing chromium at ${missing}; install with: apt-get install -y chromium$`),
    );
    // Nothing ran.
    assert.doesNotMatch(r.stdout, /ℹ tests \d+/);
  });

  it('without Nix, or with a Nix older than 2.8, names it and nix-bin', async () => {
    // A PATH with every tool the check looks for but Nix.
    const bin = join(dir, 'bin');
    await attempt('mkdir', ['-p', bin], process.env);
    const tools = [
      'sh',
      'sed',
      'sort',
      'head',
      'id',
      'xz',
      'zstd',
      'bzip2',
      'script',
      'ip',
      'tc',
      'systemd-analyze',
      'curl',
      'ps',
      'prometheus',
      'promtool',
    ];
    for (const tool of [...tools, 'bash', 'python3']) await symlink(await which(tool), join(bin, tool));
    const env = baseEnv({ PATH: bin });
    const withoutNix = await attempt('sh', ['scripts/check-prerequisites.sh'], env);
    assert.equal(withoutNix.code, 1);
    assert.match(
      withoutNix.stderr,
      /^test: cannot run the integration tests: missing nix-store >= 2\.8 .*; install with: apt-get install -y nix-bin\n$/,
    );

    for (const cmd of ['nix', 'nix-build', 'nix-instantiate', 'nix-hash'])
      await symlink('/bin/true', join(bin, cmd));
    await writeFile(join(bin, 'nix-store'), '#!/bin/sh\necho "nix-store (Nix) 2.3.7"\n', { mode: 0o755 });
    const oldNix = await attempt('sh', ['scripts/check-prerequisites.sh'], env);
    assert.equal(oldNix.code, 1);
    assert.match(
      oldNix.stderr,
      /missing nix-store >= 2\.8 \(found 2\.3\.7\); install with: apt-get install -y nix-bin\n$/,
    );
    const packages = await attempt('sh', ['scripts/check-prerequisites.sh', '--packages'], env);
    assert.equal(packages.stdout, 'nix-bin\n');

    await writeFile(join(bin, 'nix-store'), '#!/bin/sh\necho "nix-store (Nix) 2.18.1"\n', { mode: 0o755 });
    const newNix = await attempt('sh', ['scripts/check-prerequisites.sh'], env);
    assert.equal(newNix.stderr, '');
  });

  it('fails when a test skips that test/expected-skips.txt does not list, naming it', async () => {
    const file = join(dir, 'skipping.test.ts');
    await writeFile(
      file,
      [
        "import { describe, it } from 'node:test';",
        "describe('a suite', () => {",
        "  it('runs', () => {});",
        "  it('is skipped', (t) => t.skip('a tool is missing'));",
        '});',
        '',
      ].join('\n'),
    );
    const r = await attempt('sh', ['scripts/test.sh', file], baseEnv());
    assert.equal(r.code, 1, r.stdout + r.stderr);
    assert.match(
      r.stderr,
      /^test: unexpected skip on sqlite: \S*skipping\.test\.ts \| a suite > is skipped \(a tool is missing\)$/m,
    );
    // The same file with the skip gone passes.
    await writeFile(file, "import { it } from 'node:test';\nit('runs', () => {});\n");
    const fixed = await attempt('sh', ['scripts/test.sh', file], baseEnv());
    assert.equal(fixed.code, 0, fixed.stdout + fixed.stderr);
  });
});
