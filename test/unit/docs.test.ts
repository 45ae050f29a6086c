import assert from 'node:assert/strict';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import type { Command } from 'commander';
import { createProgram } from '../../src/cli/program.ts';
import { runCli } from '../../src/cli/run-cli.ts';
import { errorCodes } from '../../src/lib/error-codes.ts';
import { ROLLOUT_AGENT_STATES, ROLLOUT_DEFAULTS, ROLLOUT_STATES } from '../../src/protocol/rollout-policy.ts';
import { WEBHOOK_EVENTS, WEBHOOK_TEST_EVENT } from '../../src/protocol/webhook-schemas.ts';
import { signWebhook } from '../../src/server/webhooks/sign-webhook.ts';

/**
 * Keeps the user documentation in step with the code: every error code, CLI command, flag
 * and API route is documented, and nothing documented is gone.
 */
const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const doc = (name: string) => readFile(join(ROOT, 'docs', name), 'utf8');

/**
 * Splits markdown into sections at headings of the given level: heading text -> body. A body
 * holds its deeper headings and ends at the next heading of the same level or above; lines in
 * fenced code blocks are never headings.
 */
function sections(markdown: string, level: number): Map<string, string> {
  const out = new Map<string, string>();
  let current: string | undefined;
  let body: string[] = [];
  const close = () => {
    if (current !== undefined) out.set(current, body.join('\n'));
    current = undefined;
    body = [];
  };
  let fenced = false;
  for (const line of markdown.split('\n')) {
    // A `# comment` in a shell example is not a heading.
    if (line.trimStart().startsWith('```')) fenced = !fenced;
    const depth = fenced ? undefined : /^(#{1,6}) /.exec(line)?.[1]?.length;
    if (depth !== undefined && depth <= level) {
      close();
      if (depth === level) current = line.slice(depth + 1).trim();
    } else if (current !== undefined) {
      body.push(line);
    }
  }
  close();
  return out;
}

describe('docs/errors.md', () => {
  it('documents every error code with its HTTP status, and no code that does not exist', async () => {
    const text = await doc('errors.md');
    const documented = new Map<string, number>();
    for (const m of text.matchAll(/^### `([A-Z][A-Z0-9_]*)` \((\d{3})\)$/gm)) {
      assert.ok(!documented.has(m[1]!), `${m[1]} is documented twice`);
      documented.set(m[1]!, Number(m[2]));
    }
    for (const [code, { status }] of Object.entries(errorCodes)) {
      assert.ok(documented.has(code), `docs/errors.md lacks a "### \`${code}\` (${status})" section`);
      assert.equal(documented.get(code), status, `docs/errors.md gives ${code} the wrong HTTP status`);
    }
    const stale = [...documented.keys()].filter((c) => !Object.hasOwn(errorCodes, c));
    assert.deepEqual(stale, [], 'docs/errors.md documents codes that src/lib/error-codes.ts lacks');
  });
});

/** Every command of the tree with its full name, such as `cairn cache create`. */
function commands(cmd: Command, prefix = 'cairn'): Array<{ name: string; cmd: Command }> {
  return cmd.commands.flatMap((sub) => {
    const name = `${prefix} ${sub.name()}`;
    return [{ name, cmd: sub }, ...commands(sub, name)];
  });
}

describe('docs/cli.md', () => {
  const silent = { write: () => true };
  const program = createProgram({ stdout: silent, stderr: silent, env: {} });
  const all = commands(program);
  const leaves = all.filter((c) => c.cmd.commands.length === 0);

  it('has a section for every command that runs, naming each of its arguments and flags', async () => {
    const byHeading = sections(await doc('cli.md'), 2);
    for (const { name, cmd } of leaves) {
      const body = byHeading.get(`\`${name}\``);
      assert.ok(body !== undefined, `docs/cli.md lacks a "## \`${name}\`" section`);
      for (const arg of cmd.registeredArguments) {
        assert.ok(
          body.toLowerCase().includes(arg.name().toLowerCase()),
          `docs/cli.md: ${name} does not name its argument ${arg.name()}`,
        );
      }
      for (const option of cmd.options) {
        const flag = option.long ?? option.short ?? option.flags;
        assert.ok(body.includes(`\`${flag}`), `docs/cli.md: ${name} does not document ${flag}`);
      }
    }
  });

  it('documents the global options and every environment variable the help names', async () => {
    const text = await doc('cli.md');
    for (const option of program.options) {
      const flag = option.long ?? option.flags;
      assert.ok(text.includes(`\`${flag}`), `docs/cli.md does not document the global option ${flag}`);
    }
    let help = '';
    for (const words of [[], ...all.map((c) => c.name.split(' ').slice(1))]) {
      await runCli([...words, '--help'], {
        stdout: { write: (s: string) => (help += s) },
        stderr: silent,
        env: {},
      });
    }
    const names = new Set([...help.matchAll(/\bCAIRN_[A-Z_]+\b/g)].map((m) => m[0]));
    assert.ok(names.size > 0, 'found no CAIRN_ variables in the help');
    for (const name of names) {
      assert.ok(text.includes(`\`${name}\``), `docs/cli.md does not document the variable ${name}`);
    }
  });

  it('documents no command that does not exist', async () => {
    const names = new Set(all.map((c) => c.name));
    const headings = [...sections(await doc('cli.md'), 2).keys()]
      .map((h) => /^`(cairn [^`]+)`$/.exec(h)?.[1])
      .filter((h) => h !== undefined);
    assert.ok(headings.length > 0);
    assert.deepEqual(
      headings.filter((h) => !names.has(h)),
      [],
      'docs/cli.md has sections for commands that do not exist',
    );
  });
});

describe('docs/api.md', () => {
  it('documents every JSON API route of src/server, and none that does not exist', async () => {
    // API routes are declared relative to /api/v1, as /workspaces/:ws/... or /server/...; the
    // dashboard's are not.
    const dir = join(ROOT, 'src', 'server');
    const routes = new Set<string>();
    for (const file of await readdir(dir, { recursive: true })) {
      if (!file.endsWith('.ts')) continue;
      const source = await readFile(join(dir, file), 'utf8');
      for (const m of source.matchAll(
        /\.(get|post|put|patch|delete)\(\s*'(\/(?:workspaces|server)\/[^']*)'/g,
      )) {
        routes.add(`${m[1]!.toUpperCase()} /api/v1${m[2]}`);
      }
    }
    assert.ok(routes.size > 0, 'found no API routes in src/server');
    const text = await doc('api.md');
    const documented = new Set(
      [...text.matchAll(/^### `(GET|POST|PUT|PATCH|DELETE) (\/api\/v1\/[^`\s]+)`$/gm)].map(
        (m) => `${m[1]} ${m[2]!.split('?')[0]}`,
      ),
    );
    for (const route of routes) assert.ok(documented.has(route), `docs/api.md lacks "### \`${route}\`"`);
    assert.deepEqual(
      [...documented].filter((r) => !routes.has(r)),
      [],
      'docs/api.md documents routes that src/server does not have',
    );
  });
});

describe('docs/rollouts.md', () => {
  it('documents every policy key with its default, and every rollout and agent state', async () => {
    const text = await doc('rollouts.md');
    const { failureThreshold, ...top } = ROLLOUT_DEFAULTS;
    const keys: Array<[string, unknown]> = [
      ...Object.entries(top),
      ['failureThreshold.max', failureThreshold.max],
      ['failureThreshold.minSample', failureThreshold.minSample],
    ];
    for (const [key, value] of keys) {
      const row = new RegExp(`^\\| \`${key.replace('.', '\\.')}\` +\\| \`([^\`]+)\` +\\|`, 'm').exec(text);
      assert.ok(row, `docs/rollouts.md lacks a policy row for ${key}`);
      const shown = JSON.parse(row[1]!);
      assert.deepEqual(shown, value, `docs/rollouts.md gives ${key} the wrong default`);
    }
    const states = sections(text, 3);
    for (const [heading, list] of [
      ['Rollout states', ROLLOUT_STATES],
      ['Agent states in a rollout', ROLLOUT_AGENT_STATES],
    ] as const) {
      const body = states.get(heading);
      assert.ok(body !== undefined, `docs/rollouts.md lacks "### ${heading}"`);
      const documented = [...body.matchAll(/^\| `([a-z-]+)` /gm)].map((m) => m[1]);
      assert.deepEqual(documented, [...list], `docs/rollouts.md: ${heading} differ from the code`);
    }
  });
});

describe('docs/webhooks.md', () => {
  it('documents every event, and no event that does not exist', async () => {
    const body = sections(await doc('webhooks.md'), 2).get('Events');
    assert.ok(body !== undefined, 'docs/webhooks.md lacks "## Events"');
    const documented = [...body.matchAll(/^\| `([a-z.-]+)` /gm)].map((m) => m[1]);
    assert.deepEqual(documented, [...WEBHOOK_EVENTS, WEBHOOK_TEST_EVENT]);
  });

  it('documents every webhook setting of the server', async () => {
    const text = await doc('webhooks.md');
    const config = await readFile(join(ROOT, 'src', 'server', 'server-config.ts'), 'utf8');
    const names = new Set(
      [...config.matchAll(/\b(CAIRN_(?:WEBHOOK|AGENT_OFFLINE)_[A-Z_]+)\b/g)].map((m) => m[1]!),
    );
    assert.ok(names.size >= 5);
    for (const name of names)
      assert.ok(text.includes(`| \`${name}\``), `docs/webhooks.md lacks a row for ${name}`);
  });

  it('shows a verification without a library that accepts a real signature and refuses a forged one', async () => {
    const text = await doc('webhooks.md');
    const code = /```js\n(import \{ createHmac[\s\S]*?)```/.exec(text)?.[1];
    assert.ok(code, 'docs/webhooks.md lacks the node:crypto example');
    const { createHmac, timingSafeEqual } = await import('node:crypto');
    const source = code.replace(/^import .*$/m, '');
    const verify = new Function('createHmac', 'timingSafeEqual', `${source}\nreturn verify;`)(
      createHmac,
      timingSafeEqual,
    ) as (secret: string, headers: Record<string, string>, body: string) => boolean;
    const old = 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw';
    const fresh = 'whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD';
    const id = 'msg_1';
    const timestamp = Math.floor(Date.now() / 1000);
    const body = '{"type":"webhook.test"}';
    const headers = {
      'webhook-id': id,
      'webhook-timestamp': String(timestamp),
      'webhook-signature': signWebhook([fresh, old], { id, timestamp, body }),
    };
    assert.equal(verify(old, headers, body), true);
    assert.equal(verify(fresh, headers, body), true);
    assert.equal(verify('whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA', headers, body), false);
    assert.equal(verify(old, headers, body.replace('test', 'tost')), false);
    // Correctly signed, but ten minutes old: a replay.
    const stale = timestamp - 600;
    const replayed = {
      'webhook-id': id,
      'webhook-timestamp': String(stale),
      'webhook-signature': signWebhook([old], { id, timestamp: stale, body }),
    };
    assert.equal(verify(old, replayed, body), false);
  });
});
