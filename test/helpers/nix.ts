import { execFile, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

const execFileAsync = promisify(execFile);

/** The Nix settings every test runs Nix with: no sandbox, no public substituter. */
export const TEST_NIX_CONFIG = [
  'experimental-features = nix-command flakes',
  'sandbox = false',
  'substituters =',
].join('\n');

/** The environment for a child `nix` process in tests. */
export function nixEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  return { ...process.env, NIX_CONFIG: TEST_NIX_CONFIG, ...extra };
}

/** Runs a command to completion and returns its stdout; throws with stderr on a non-zero exit. */
export async function run(
  cmd: string,
  args: readonly string[],
  options: { env?: NodeJS.ProcessEnv; input?: string; cwd?: string } = {},
): Promise<string> {
  if (options.input !== undefined) {
    return await new Promise((resolve, reject) => {
      const child = spawn(cmd, args, { env: options.env ?? nixEnv(), cwd: options.cwd });
      let out = '';
      let err = '';
      child.stdout.on('data', (d: Buffer) => {
        out += d.toString();
      });
      child.stderr.on('data', (d: Buffer) => {
        err += d.toString();
      });
      child.on('error', reject);
      child.on('close', (code) =>
        code === 0 ? resolve(out) : reject(new Error(`${cmd} ${args.join(' ')} exited ${code}: ${err}`)),
      );
      child.stdin.end(options.input);
    });
  }
  const { stdout } = await execFileAsync(cmd, [...args], {
    env: options.env ?? nixEnv(),
    cwd: options.cwd,
    maxBuffer: 256 * 1024 * 1024,
    encoding: 'utf8',
  });
  return stdout;
}

/** A unique tag for this test run, so that every built store path is new. */
export const RUN_TAG = `${Date.now().toString(36)}${randomBytes(3).toString('hex')}`;

/** One tiny package to build: a name, a shell script writing `$out`, and the packages it references. */
export interface TestPackage {
  readonly name: string;
  /** Shell commands run by /bin/sh to create `$out`. Referenced packages are in `$dep_<name>` (dashes -> underscores). */
  readonly script?: string;
  readonly deps?: readonly string[];
}

/**
 * Builds tiny derivations with `/bin/sh` as builder, unique to this run, and returns
 * name -> store path. Each package's output references its deps (their paths are written into it).
 */
export async function buildPackages(packages: readonly TestPackage[]): Promise<Map<string, string>> {
  const dir = await mkdtemp(join(tmpdir(), 'cairn-nix-'));
  try {
    const attr = (n: string) => `p_${n.replace(/[^A-Za-z0-9]/g, '_')}`;
    const lines = packages.map((p) => {
      const deps = p.deps ?? [];
      const depEnv = deps.map((d) => `dep_${d.replace(/[^A-Za-z0-9]/g, '_')} = ${attr(d)};`).join(' ');
      const script =
        p.script ??
        `mkdir -p $out/bin; echo '#!/bin/sh' > $out/bin/${p.name.split('-')[0]}; echo ${RUN_TAG} > $out/tag; ${deps
          .map((d) => `echo $dep_${d.replace(/[^A-Za-z0-9]/g, '_')} >> $out/deps`)
          .join('; ')}`;
      return `  ${attr(p.name)} = derivation { name = ${JSON.stringify(p.name)}; system = builtins.currentSystem; builder = "/bin/sh"; PATH = "/usr/bin:/bin"; tag = ${JSON.stringify(RUN_TAG)}; ${depEnv} args = [ "-c" ${JSON.stringify(script)} ]; };`;
    });
    const expr = `rec {\n${lines.join('\n')}\n}`;
    const file = join(dir, 'default.nix');
    await writeFile(file, expr);
    const args = [file, '--no-out-link', ...packages.flatMap((p) => ['-A', attr(p.name)])];
    const outs = (await run('nix-build', args)).trim().split('\n');
    return new Map(packages.map((p, i) => [p.name, outs[i]!]));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/**
 * Deletes `paths` from the local store, so that an agent must download them as on another
 * machine, and checks that they are gone: throws, naming them and Nix's own words, when any is
 * still valid or still on disk (a test that went on would pass without any download).
 */
export async function deleteFromStore(paths: readonly string[]): Promise<void> {
  let why = '';
  try {
    await run('nix-store', ['--delete', ...paths]);
  } catch (err) {
    // Judged below: Nix refuses the whole call when one path is still alive.
    why = (err as Error).message;
  }
  const invalid = new Set(
    (await run('nix-store', ['--check-validity', '--print-invalid', ...paths])).split('\n'),
  );
  const left = paths.filter((p) => !invalid.has(p) || existsSync(p));
  if (left.length > 0) {
    throw new Error(
      `Cannot delete from the store: still there after nix-store --delete (${left.join(' ')}) ${why}`,
    );
  }
}
