import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { once } from 'node:events';
import { copyFile, mkdir, mkdtemp, readFile, realpath, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { after, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { createTestDatabase, type TestDatabase, testPostgresUrl } from '../helpers/server.ts';
import { freePort } from '../helpers/server-process.ts';

/**
 * Runs docs/getting-started.md as a reader would, so that the guide and the code cannot drift
 * apart: every ```sh block, in order, in one bash session (exports and the `cairn` function
 * carry over), against a fresh data dir, ending with a succeeded deployment.
 *
 * An HTML comment on the line before a block (not rendered) marks the blocks a script cannot run
 * as a reader does:
 * - `<!-- quickstart: skip: REASON -->`: not run. Only `npm ci` is: the suite runs from a checkout
 *   already installed and built, and an `npm ci` would reinstall node_modules under it.
 * - `<!-- quickstart: background until COMMAND -->`: a long-running command the reader leaves
 *   in a terminal of its own (the server, the agent). It runs in a subshell in the background,
 *   with its output in a log file, and the session goes on once COMMAND succeeds.
 * Other fences (output samples, nix.conf snippets) are not run.
 *
 * The page names fixed places; the test runs the blocks with these literal strings replaced,
 * and nothing else changed, so that it uses fresh directories and a free port and never touches
 * a real server on 8080:
 * - `127.0.0.1:8080` -> `127.0.0.1:<free port>`
 * - `/tmp/` -> `<fresh directory>/` (the data dir, the Nix expression, the profile, the agent state)
 * - `/path/to/cairn` -> a private copy of this checkout (see `privateCheckout`)
 * The session starts in another fresh directory (the reader's "directory of your choice"), with
 * the environment of this process minus npm's, Node's test runner's, Cairn's and NIX_CONFIG, which
 * the page sets itself. On the PostgreSQL run (CAIRN_TEST_DATABASE_URL), the server gets a fresh
 * PostgreSQL database through CAIRN_DATABASE_URL, as the suite runs on both databases.
 */
const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const GUIDE = join(ROOT, 'docs', 'getting-started.md');
const execFileAsync = promisify(execFile);

/** One ```sh block of the guide and how to run it. */
interface Block {
  /** 1-based line of the opening fence in the guide. */
  readonly line: number;
  readonly text: string;
  readonly mode: { kind: 'run' } | { kind: 'skip' } | { kind: 'background'; until: string };
}

/** The ```sh blocks of `markdown` in order, with the quickstart directive before each, if any. */
function shellBlocks(markdown: string): Block[] {
  const lines = markdown.split('\n');
  const blocks: Block[] = [];
  let directive: { line: number; text: string } | undefined;
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!;
    const comment = /^<!--\s*quickstart:\s*(.*?)\s*-->\s*$/.exec(line);
    if (comment) {
      directive = { line: i + 1, text: comment[1]! };
      continue;
    }
    const fence = /^```(\S*)\s*$/.exec(line);
    if (!fence) {
      if (directive && line.trim() !== '') {
        throw new Error(
          `Cannot read the guide: a quickstart comment is not before a block (line ${directive.line})`,
        );
      }
      continue;
    }
    const info = fence[1]!;
    const end = lines.findIndex((l, j) => j > i && /^```\s*$/.test(l));
    if (end < 0) throw new Error(`Cannot read the guide: unclosed fence (line ${i + 1})`);
    if (['bash', 'shell', 'console', 'zsh'].includes(info)) {
      throw new Error(
        `Cannot read the guide: commands go in \`\`\`sh blocks, not \`\`\`${info} (line ${i + 1})`,
      );
    }
    if (info === 'sh') {
      blocks.push({ line: i + 1, text: lines.slice(i + 1, end).join('\n'), mode: parseDirective(directive) });
    } else if (directive) {
      throw new Error(
        `Cannot read the guide: a quickstart comment is before a \`\`\`${info} block (line ${i + 1})`,
      );
    }
    directive = undefined;
    i = end;
  }
  return blocks;
}

function parseDirective(directive: { line: number; text: string } | undefined): Block['mode'] {
  if (directive === undefined) return { kind: 'run' };
  if (/^skip:\s*\S/.test(directive.text)) return { kind: 'skip' };
  const background = /^background until\s+(\S.*)$/.exec(directive.text);
  if (background) return { kind: 'background', until: background[1]! };
  throw new Error(
    `Cannot read the guide: unknown quickstart comment, expected "skip: REASON" or "background until COMMAND" (line ${directive.line}: ${directive.text})`,
  );
}

/** Replaces each key of `substitutions` in `text` in one pass, counting the replacements. */
function substitute(
  text: string,
  substitutions: ReadonlyMap<string, string>,
  counts: Map<string, number>,
): string {
  const pattern = new RegExp(
    [...substitutions.keys()].map((k) => k.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')).join('|'),
    'g',
  );
  return text.replace(pattern, (match) => {
    counts.set(match, (counts.get(match) ?? 0) + 1);
    return substitutions.get(match)!;
  });
}

/**
 * The guide's blocks with `substitutions` applied to the blocks that run and their readiness
 * commands. Fails if a substitution is no longer used (the list would go stale) or if port 8080
 * is still named (the test would talk to whatever listens there).
 */
function runnableBlocks(markdown: string, substitutions: ReadonlyMap<string, string>): Block[] {
  const counts = new Map<string, number>();
  const blocks = shellBlocks(markdown).map((b): Block => {
    if (b.mode.kind === 'skip') return b;
    const text = substitute(b.text, substitutions, counts);
    const mode =
      b.mode.kind === 'background'
        ? { ...b.mode, until: substitute(b.mode.until, substitutions, counts) }
        : b.mode;
    assert.doesNotMatch(
      `${text}\n${mode.kind === 'background' ? mode.until : ''}`,
      /8080/,
      `a block still names port 8080 (line ${b.line})`,
    );
    return { ...b, text, mode };
  });
  for (const key of substitutions.keys()) {
    assert.ok(counts.has(key), `the guide's blocks no longer use ${key}: drop it from the substitutions`);
  }
  assert.ok(
    blocks.some((b) => b.mode.kind === 'background'),
    'the guide has no background block, yet the server must run',
  );
  return blocks;
}

/** Bash helpers of the session; `qs_` names keep them apart from the guide's. */
const PRELUDE = `set -euo pipefail
exec 2>&1
# qs_background N FILE COMMAND: runs FILE in a background subshell (output in background-N.log),
# then waits up to 30 s for COMMAND to succeed, failing early if the subshell exits.
qs_background() {
  ( source "$2" ) > "$QS_DIR/background-$1.log" 2>&1 < /dev/null &
  local pid=$! deadline=$((SECONDS + 30))
  until (eval "$3") > /dev/null 2>&1; do
    if ! kill -0 "$pid" 2> /dev/null; then
      echo "quickstart: the background block exited before this succeeded: $3"
      return 1
    fi
    if ((SECONDS > deadline)); then
      echo "quickstart: this did not succeed within 30 s: $3"
      return 1
    fi
    sleep 0.1
  done
}
`;

/** The bash script that runs `blocks` in order, each from its own file in `dir`. */
async function writeSession(blocks: readonly Block[], dir: string): Promise<string> {
  const lines = [PRELUDE];
  for (const [n, block] of blocks.entries()) {
    if (block.mode.kind === 'skip') continue;
    const file = join(dir, `block-${n}.sh`);
    await writeFile(file, `${block.text}\n`);
    lines.push(`echo ${n} > "$QS_DIR/current"`);
    lines.push(
      block.mode.kind === 'background'
        ? `qs_background ${n} ${shellQuote(file)} ${shellQuote(block.mode.until)}`
        : `source ${shellQuote(file)}`,
    );
  }
  lines.push('echo done > "$QS_DIR/current"');
  const script = join(dir, 'session.sh');
  await writeFile(script, `${lines.join('\n')}\n`);
  return script;
}

function shellQuote(s: string): string {
  return `'${s.replaceAll("'", `'\\''`)}'`;
}

/**
 * A checkout of Cairn for the guide's `/path/to/cairn`, as `npm ci` leaves it, built from this
 * one's sources: its package.json, entry point and build script copied, its src/ and node_modules/
 * linked, and dist/ built by the build script, as `npm ci` runs it (through `prepare`). The tree's
 * own dist/ is not used: it may be stale, and the npm package test rebuilds it (removing it first)
 * while this test runs.
 */
async function privateCheckout(dir: string): Promise<void> {
  await mkdir(join(dir, 'bin'), { recursive: true });
  await mkdir(join(dir, 'scripts'));
  // Copies, not links: Node resolves a linked main module to its real path, and the build script
  // and entry point find dist/ from their own location.
  for (const file of ['package.json', 'bin/cairn.js', 'scripts/build.ts']) {
    await copyFile(join(ROOT, file), join(dir, file));
  }
  await symlink(join(ROOT, 'src'), join(dir, 'src'));
  await symlink(join(ROOT, 'node_modules'), join(dir, 'node_modules'));
  await execFileAsync(process.execPath, ['--import', 'tsx', 'scripts/build.ts'], { cwd: dir });
}

/** This process's environment as a reader's fresh shell would have it (see the top comment). */
function readerEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (/^(npm_|NODE_|CAIRN_)/.test(k) || k === 'NIX_CONFIG') continue;
    env[k] = v;
  }
  env.PATH = (env.PATH ?? '')
    .split(delimiter)
    .filter((p) => !p.includes('node_modules'))
    .join(delimiter);
  return env;
}

/** Sends `signal` to the process group `pgid`; false if it has no process left. */
function signalGroup(pgid: number, signal: NodeJS.Signals | 0): boolean {
  try {
    process.kill(-pgid, signal);
    return true;
  } catch {
    return false;
  }
}

/** Stops every process of the session (bash, the server, the agent, their children). */
async function stopGroup(pgid: number): Promise<void> {
  signalGroup(pgid, 'SIGTERM');
  const deadline = Date.now() + 10_000;
  while (signalGroup(pgid, 0)) {
    if (Date.now() > deadline) {
      signalGroup(pgid, 'SIGKILL');
      return;
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

describe('docs/getting-started.md', { timeout: 120_000 }, () => {
  let base: string | undefined;
  let pgid: number | undefined;
  let pgDatabase: TestDatabase | undefined;

  after(async () => {
    if (pgid !== undefined) await stopGroup(pgid);
    if (base) await rm(base, { recursive: true, force: true });
    await pgDatabase?.drop();
  });

  it('runs as written, step by step, against a fresh data dir, and ends with succeeded deployments', async () => {
    base = await mkdtemp(join(tmpdir(), 'cairn-quickstart-'));
    const [checkout, tmp, work, runner] = ['checkout', 'tmp', 'work', 'runner'].map((d) =>
      join(base!, d),
    ) as [string, string, string, string];
    for (const d of [tmp, work, runner]) await mkdir(d);
    const port = await freePort();
    await privateCheckout(checkout);

    const substitutions = new Map([
      ['127.0.0.1:8080', `127.0.0.1:${port}`],
      ['/tmp/', `${tmp}/`],
      ['/path/to/cairn', checkout],
    ]);
    const blocks = runnableBlocks(await readFile(GUIDE, 'utf8'), substitutions);

    const script = await writeSession(blocks, runner);
    pgDatabase = testPostgresUrl() === undefined ? undefined : await createTestDatabase();
    const database = pgDatabase?.config.kind === 'postgres' ? pgDatabase.config.url : undefined;
    const bash = spawn('bash', [script], {
      cwd: work,
      env: {
        ...readerEnv(),
        QS_DIR: runner,
        ...(database === undefined ? {} : { CAIRN_DATABASE_URL: database }),
      },
      // Its own process group, so that the server and agent it starts can be stopped with it.
      detached: true,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    pgid = bash.pid;
    let transcript = '';
    bash.stdout.on('data', (d: Buffer) => {
      transcript += d.toString();
    });
    bash.stderr.on('data', (d: Buffer) => {
      transcript += d.toString();
    });
    const started = Date.now();
    const timer = setTimeout(() => {
      transcript += '\nquickstart: stopped after 90 s\n';
      if (pgid !== undefined) signalGroup(pgid, 'SIGKILL');
    }, 90_000);
    const [code] = (await once(bash, 'close')) as [number | null];
    clearTimeout(timer);
    // As the other tests' CAIRN_TEST_LOG does: show what a reader would see.
    if (process.env.CAIRN_TEST_LOG) process.stderr.write(transcript);

    const explain = async () => {
      const current = (await readFile(join(runner, 'current'), 'utf8').catch(() => '')).trim();
      const block = blocks[Number(current)];
      let logs = '';
      for (const [n, b] of blocks.entries()) {
        if (b.mode.kind !== 'background') continue;
        const log = await readFile(join(runner, `background-${n}.log`), 'utf8').catch(() => '(none)');
        logs += `\n--- background block at line ${b.line} ---\n${log}`;
      }
      const where = block
        ? `the block at line ${block.line} of docs/getting-started.md:\n${block.text}`
        : current;
      return `in ${where}\n--- transcript ---\n${transcript}${logs}`;
    };
    assert.equal(code, 0, `the guide failed after ${Date.now() - started} ms ${await explain()}`);

    // The deployment the guide made, as the API reports it, and the profile on the machine.
    assert.match(transcript, /^web1 +succeeded /m, await explain());
    const deployJson = JSON.parse(await readFile(join(work, 'deploy.json'), 'utf8')) as {
      agents: Record<string, string>;
    };
    const path = deployJson.agents.web1;
    assert.match(path ?? '', /^\/nix\/store\/[0-9a-z]{32}-hello-site-1\.0$/);
    const adminToken = (await readFile(join(tmp, 'cairn-data', 'admin-token'), 'utf8')).trim();
    const res = await fetch(`http://127.0.0.1:${port}/api/v1/workspaces/default/deployments?agent=web1`, {
      headers: { authorization: `Bearer ${adminToken}` },
    });
    assert.equal(res.status, 200);
    const { deployments } = (await res.json()) as {
      deployments: Array<{ agent: string; storePath: string; state: string }>;
    };
    assert.deepEqual(
      deployments.map((d) => [d.agent, d.storePath, d.state]),
      [['web1', path, 'succeeded']],
    );
    assert.equal(await realpath(join(tmp, 'cairn-profiles', 'web1')), path);
    // The second machine enrolled itself with the enrolment token, and deployed.
    assert.match(transcript, /^web2 +succeeded /m, await explain());
    const enrolled = await fetch(`http://127.0.0.1:${port}/api/v1/workspaces/default/audit`, {
      headers: { authorization: `Bearer ${adminToken}` },
    });
    const { entries } = (await enrolled.json()) as { entries: Array<{ action: string; target: string }> };
    assert.deepEqual(
      entries.filter((e) => e.action === 'agent.enrol').map((e) => e.target),
      ['web2'],
    );
    assert.equal(await realpath(join(tmp, 'cairn-profiles', 'web2')), path);
    // The server ran on the database of this run.
    const serverLog = await Promise.all(
      blocks.map((b, n) =>
        b.mode.kind === 'background' ? readFile(join(runner, `background-${n}.log`), 'utf8') : '',
      ),
    );
    const dialect = database === undefined ? 'sqlite' : 'postgres';
    assert.match(
      serverLog.join(''),
      new RegExp(`"database":"${dialect}","blobStore":"local","msg":"cairn server listening"`),
    );
  });
});
