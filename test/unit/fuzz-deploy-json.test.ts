import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import fc from 'fast-check';
import { Hono } from 'hono';
import { readDeployJson } from '../../src/cli/deploy-activate.ts';
import { isCairnError } from '../../src/lib/cairn-error.ts';
import { NIX32_ALPHABET } from '../../src/nix/nix32.ts';
import { deployJsonSchema } from '../../src/protocol/deploy-json.ts';
import { parseJsonBody } from '../../src/server/api/parse-json-body.ts';
import { errorResponse } from '../../src/server/http/error-response.ts';

/**
 * Property-based fuzzing of deploy.json validation: the schema itself, the CLI's reader and the
 * server's JSON body parser. Whatever the input, validation never throws; an invalid file gets
 * one issue per problem, each with a path and a message, and the CLI and server turn them into
 * INVALID_ARGUMENT (or BAD_REQUEST for a body that is not JSON). The seed is fixed so that a
 * failure replays (fast-check prints it); set FUZZ_SEED to explore.
 */
const SEED = Number(process.env.FUZZ_SEED ?? 7);
const params = (numRuns: number) => ({ seed: SEED, numRuns, includeErrorInReport: true });

// --- Valid deploy.json -----------------------------------------------------------------------

const nix32 = fc.string({ unit: fc.constantFrom(...NIX32_ALPHABET), minLength: 32, maxLength: 32 });
const storePath = fc
  .tuple(nix32, fc.stringMatching(/^[a-zA-Z0-9+_?=][a-zA-Z0-9+_?=.-]{0,30}$/))
  .map(([h, n]) => `/nix/store/${h}-${n}`);
const agentName = fc.stringMatching(/^[a-z0-9][a-z0-9._-]{0,20}$/);
const timing = {
  timeoutSeconds: fc.integer({ min: 1, max: 3600 }),
  retries: fc.integer({ min: 0, max: 100 }),
  intervalSeconds: fc.integer({ min: 0, max: 3600 }),
  graceSeconds: fc.integer({ min: 0, max: 3600 }),
};
const optional = { requiredKeys: [] as never[] };
const healthCheck = fc.oneof(
  fc
    .tuple(
      // A program inside the closure (relative, no `..`), then any arguments.
      fc.array(fc.stringMatching(/^[A-Za-z0-9_+-][A-Za-z0-9._+-]{0,9}$/), { minLength: 1, maxLength: 3 }),
      fc.array(fc.string({ minLength: 1, maxLength: 20 }), { maxLength: 3 }),
      fc.record(timing, optional),
    )
    .map(([program, args, t]) => ({ command: [program.join('/'), ...args], ...t })),
  fc
    .tuple(
      fc.constantFrom('http', 'https'),
      fc.integer({ min: 1, max: 65535 }),
      fc.integer({ min: 100, max: 599 }),
    )
    .map(([scheme, port, status]) => ({ http: `${scheme}://127.0.0.1:${port}/healthz`, status })),
  fc
    .array(fc.stringMatching(/^[A-Za-z0-9:_.@-]{1,20}$/), { minLength: 1, maxLength: 3 })
    .map((systemd) => ({ systemd })),
);
const validDeploy = fc
  .record(
    {
      agents: fc.dictionary(agentName, storePath, { minKeys: 1, maxKeys: 5 }),
      rollbackScript: fc.dictionary(
        fc.constantFrom('x86_64-linux', 'aarch64-linux', 'aarch64-darwin'),
        storePath,
      ),
      exit4: fc.constantFrom('fail', 'tolerate'),
      healthChecks: fc.dictionary(
        fc.oneof(fc.constant('*'), agentName),
        fc.array(healthCheck, { maxLength: 3 }),
        {
          maxKeys: 3,
        },
      ),
      confirmTimeoutSeconds: fc.integer({ min: 5, max: 3600 }),
    },
    { requiredKeys: ['agents'] },
  )
  .map((d) => d as Record<string, unknown>);

// --- Mutations -------------------------------------------------------------------------------

type Json = unknown;
const hostileValue = fc.oneof(
  fc.jsonValue({ maxDepth: 3 }),
  fc.constantFrom('', ' ', '/nix/store/', '/nix/store/../etc', 'é', '\u0000', '\uD800', '__proto__', '*'),
  fc.constantFrom(-1, 0, 4, 5.5, 3601, 2 ** 53, -0, 1e308),
  fc.integer({ min: 1_000, max: 100_000 }).map((n) => 'x'.repeat(n)),
  // Past the limit of 50 checks per agent.
  fc.integer({ min: 51, max: 2_000 }).map((n) => Array.from({ length: n }, () => ({ command: ['x'] }))),
);
const hostileKey = fc.oneof(
  fc.string(),
  fc.constantFrom(
    '__proto__',
    'constructor',
    'prototype',
    'toString',
    'hasOwnProperty',
    '*',
    '',
    'A',
    'a'.repeat(64),
  ),
);

/** Paths to the values inside `v`, the root included; a huge array is one value, not entered. */
function paths(v: Json, prefix: Array<string | number> = []): Array<Array<string | number>> {
  const out = [prefix];
  if (Array.isArray(v)) {
    if (v.length <= 50) for (const [i, x] of v.entries()) out.push(...paths(x, [...prefix, i]));
  } else if (v !== null && typeof v === 'object') {
    for (const [k, x] of Object.entries(v)) out.push(...paths(x, [...prefix, k]));
  }
  return out;
}

const at = (v: Json, path: ReadonlyArray<string | number>): Json =>
  path.reduce<Json>((o, key) => (o as Record<string, Json>)[key], v);

/** `v` with the value at `path` replaced by `f(old)` (removed when f returns undefined). */
function edit(v: Json, path: ReadonlyArray<string | number>, f: (old: Json) => Json): Json {
  if (path.length === 0) return f(v);
  const [head, ...rest] = path as [string | number, ...Array<string | number>];
  if (Array.isArray(v)) {
    const copy = [...v];
    const next = edit(copy[head as number], rest, f);
    if (next === undefined) copy.splice(head as number, 1);
    else copy[head as number] = next;
    return copy;
  }
  // defineProperty, not assignment: a `__proto__` key must stay an own key, as JSON.parse makes it.
  const copy: Record<string, Json> = {};
  for (const [k, x] of Object.entries(v as object))
    Object.defineProperty(copy, k, { value: x, enumerable: true, writable: true, configurable: true });
  const next = edit(copy[head], rest, f);
  if (next === undefined) delete copy[head];
  else
    Object.defineProperty(copy, head, { value: next, enumerable: true, writable: true, configurable: true });
  return copy;
}

type Mutation = (v: Json) => Json;
const mutation: fc.Arbitrary<Mutation> = fc.oneof(
  fc.tuple(fc.nat(), hostileValue).map(([i, x]) => (v: Json) => {
    const ps = paths(v);
    return edit(v, ps[i % ps.length]!, () => x); // a value replaced
  }),
  fc.nat().map((i) => (v: Json) => {
    const ps = paths(v).slice(1);
    return ps.length === 0 ? v : edit(v, ps[i % ps.length]!, () => undefined); // a key or element removed
  }),
  fc.tuple(fc.nat(), hostileKey, hostileValue).map(([i, k, x]) => (v: Json) => {
    const objects = paths(v).filter((p) => {
      const o = at(v, p);
      return o !== null && typeof o === 'object' && !Array.isArray(o);
    });
    if (objects.length === 0) return v;
    return edit(v, objects[i % objects.length]!, (o) => {
      const copy = edit(o, [k], () => x);
      return copy; // a key added (an agent name, a system, an unknown field)
    });
  }),
  fc.nat().map((i) => (v: Json) => {
    const ps = paths(v);
    return edit(v, ps[i % ps.length]!, (old) => [old]); // a value wrapped in an array
  }),
);
const mutatedDeploy = fc
  .tuple(validDeploy, fc.array(mutation, { minLength: 1, maxLength: 3 }))
  .map(([d, ms]) => ms.reduce<Json>((v, m) => m(v), d));

// --- Checks ----------------------------------------------------------------------------------

/** Validates `input` and checks the outcome; returns whether it was valid. */
function validate(input: unknown): boolean {
  const result = deployJsonSchema.safeParse(input);
  if (result.success) return true;
  assert.ok(result.error.issues.length > 0, 'invalid without issues');
  for (const issue of result.error.issues) {
    assert.ok(Array.isArray(issue.path), 'issue without a path');
    assert.equal(typeof issue.message, 'string');
    assert.ok(issue.message.length > 0, 'issue without a message');
    // As the CLI and the server print them.
    assert.equal(typeof `${issue.path.join('.') || '(file)'}: ${issue.message}`, 'string');
  }
  return false;
}

describe('deploy.json validation under fuzzing', () => {
  it('accepts every valid deploy.json', () => {
    fc.assert(
      fc.property(validDeploy, (d) => assert.ok(validate(d), JSON.stringify(d))),
      params(1_000),
    );
  });

  it('never throws on arbitrary JSON, and reports each problem with a path and a message', () => {
    fc.assert(
      fc.property(fc.jsonValue(), (v) => void validate(v)),
      params(3_000),
    );
    // What JSON.parse cannot make, for callers that validate objects they built.
    const anything = fc.anything({
      withBigInt: true,
      withBoxedValues: true,
      withDate: true,
      withMap: true,
      withSet: true,
      withNullPrototype: true,
      withObjectString: true,
      withSparseArray: true,
      withTypedArray: true,
    });
    fc.assert(
      fc.property(anything, (v) => void validate(v)),
      params(2_000),
    );
    fc.assert(
      fc.property(fc.record({ agents: anything }, optional), (v) => void validate(v)),
      params(1_000),
    );
  });

  it('never throws on mutated valid files', (t) => {
    // Whether a mutant is still valid is not judged here (the schema under test would be the
    // judge): the hand-written cases below say which files must be rejected.
    let valid = 0;
    fc.assert(
      fc.property(mutatedDeploy, (v) => {
        // Through JSON, as the CLI and the server see it.
        if (validate(JSON.parse(JSON.stringify(v)))) valid++;
      }),
      params(3_000),
    );
    t.diagnostic(`${valid} of 3000 mutated files were still valid`);
  });
});

// --- Hand-written invalid files ----------------------------------------------------------------

const PATH = '/nix/store/ca326ks7frq1n79h5d3i7bcqpy4ldr77-system';
const BASE = { agents: { web1: PATH } };
const checks = (list: Json) => ({ ...BASE, healthChecks: { '*': list } });

/**
 * Files that docs/deploy-json.md and Cachix's format say are invalid, with the path an issue
 * must name: no agents, bad agent names, what is not a store path, values out of range, health
 * checks that cannot run.
 */
const INVALID_FILES: ReadonlyArray<readonly [string, Json, string]> = [
  ['null', null, ''],
  ['an array', [BASE], ''],
  ['a file without agents', {}, 'agents'],
  ['no agent', { agents: {} }, 'agents'],
  ['agents as an array', { agents: [PATH] }, 'agents'],
  ['an upper-case agent name', { agents: { Web1: PATH } }, 'agents.Web1'],
  ['an empty agent name', { agents: { '': PATH } }, 'agents'],
  ['a 64-character agent name', { agents: { ['a'.repeat(64)]: PATH } }, 'agents'],
  ['an agent name with a space', { agents: { 'web 1': PATH } }, 'agents'],
  ['a store path with a short hash', { agents: { web1: '/nix/store/abc-system' } }, 'agents.web1'],
  ['a hash with a letter nix32 lacks', { agents: { web1: PATH.replace('ca326', 'ea326') } }, 'agents.web1'],
  ['a path inside a store path', { agents: { web1: `${PATH}/bin/switch` } }, 'agents.web1'],
  ['a store path outside /nix/store', { agents: { web1: PATH.replace('/nix/', '/gnu/') } }, 'agents.web1'],
  [
    'a store path named ..',
    { agents: { web1: '/nix/store/ca326ks7frq1n79h5d3i7bcqpy4ldr77-..' } },
    'agents.web1',
  ],
  ['a store path as a number', { agents: { web1: 42 } }, 'agents.web1'],
  [
    'a rollback script that is not a store path',
    { ...BASE, rollbackScript: { 'x86_64-linux': 'rollback.sh' } },
    'rollbackScript.x86_64-linux',
  ],
  ['a rollback script for no system', { ...BASE, rollbackScript: { '': PATH } }, 'rollbackScript'],
  ['an unknown exit4 policy', { ...BASE, exit4: 'ignore' }, 'exit4'],
  ['a confirm timeout of 4 s', { ...BASE, confirmTimeoutSeconds: 4 }, 'confirmTimeoutSeconds'],
  ['a confirm timeout of 3601 s', { ...BASE, confirmTimeoutSeconds: 3601 }, 'confirmTimeoutSeconds'],
  ['a fractional confirm timeout', { ...BASE, confirmTimeoutSeconds: 10.5 }, 'confirmTimeoutSeconds'],
  ['a confirm timeout as a string', { ...BASE, confirmTimeoutSeconds: '60' }, 'confirmTimeoutSeconds'],
  ['health checks not in a list', checks({ command: ['true'] }), 'healthChecks.*'],
  ['an empty health check', checks([{}]), 'healthChecks.*.0'],
  ['a command check without a program', checks([{ command: [] }]), 'healthChecks.*.0'],
  ['a command check with an empty argument', checks([{ command: [''] }]), 'healthChecks.*.0'],
  [
    'a command check running /bin/sh',
    checks([{ command: ['/bin/sh', '-c', 'id'] }]),
    'healthChecks.*.0.command.0',
  ],
  [
    'a command check climbing out with ..',
    checks([{ command: ['bin/../../x'] }]),
    'healthChecks.*.0.command.0',
  ],
  ['an ftp check', checks([{ http: 'ftp://127.0.0.1/' }]), 'healthChecks.*.0'],
  [
    'an http check expecting status 600',
    checks([{ http: 'http://127.0.0.1/', status: 600 }]),
    'healthChecks.*.0',
  ],
  ['a systemd unit name with a space', checks([{ systemd: ['web server.service'] }]), 'healthChecks.*.0'],
  ['negative retries', checks([{ command: ['true'], retries: -1 }]), 'healthChecks.*.0'],
  ['a timeout of 0 s', checks([{ command: ['true'], timeoutSeconds: 0 }]), 'healthChecks.*.0'],
  ['a timeout over an hour', checks([{ command: ['true'], timeoutSeconds: 3601 }]), 'healthChecks.*.0'],
  ['a negative grace period', checks([{ command: ['true'], graceSeconds: -1 }]), 'healthChecks.*.0'],
  ['a negative interval', checks([{ command: ['true'], intervalSeconds: -1 }]), 'healthChecks.*.0'],
  ['51 checks for one agent', checks(Array(51).fill({ command: ['true'] })), 'healthChecks.*'],
];

describe('deploy.json files written by hand', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'cairn-invalid-deploy-'));
  });
  after(() => rm(dir, { recursive: true, force: true }));

  it(`the schema rejects every one of ${INVALID_FILES.length} invalid files, naming the field`, () => {
    assert.ok(validate(BASE), 'the base of the cases is valid');
    const accepted: string[] = [];
    for (const [label, file, path] of INVALID_FILES) {
      const parsed = deployJsonSchema.safeParse(file);
      if (parsed.success) {
        accepted.push(label);
        continue;
      }
      const paths = parsed.error.issues.map((i) => i.path.join('.'));
      assert.ok(
        paths.some((p) => p === path || p.startsWith(`${path}.`) || path === ''),
        `${label}: no issue at ${path || 'the file'}, only at ${JSON.stringify(paths)}`,
      );
    }
    assert.deepEqual(accepted, [], 'accepted invalid files');
  });

  it('cairn deploy activate refuses each of them with INVALID_ARGUMENT, naming the file', async () => {
    for (const [label, contents] of INVALID_FILES) {
      const file = join(dir, 'deploy.json');
      await writeFile(file, JSON.stringify(contents));
      await assert.rejects(
        readDeployJson(file),
        (err) => isCairnError(err, 'INVALID_ARGUMENT') && err.message.includes(file),
        label,
      );
    }
  });

  it('the API refuses each of them with 400 and validations', async () => {
    const app = new Hono();
    app.post('/', async (c) => c.json(await parseJsonBody(c, deployJsonSchema, 'create the deployment')));
    app.onError((err, c) => {
      const { status, body } = errorResponse(err, { error: () => {} });
      return c.json(body, status as 400);
    });
    for (const [label, contents] of INVALID_FILES) {
      const res = await app.request('/', { method: 'POST', body: JSON.stringify(contents) });
      const json = (await res.json()) as { code?: string; validations?: unknown[] };
      assert.equal(res.status, 400, label);
      assert.equal(json.code, 'INVALID_ARGUMENT', label);
      assert.ok((json.validations?.length ?? 0) > 0, `${label}: no validations`);
    }
  });
});

describe('readDeployJson under fuzzing', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'cairn-fuzz-deploy-'));
  });
  after(() => rm(dir, { recursive: true, force: true }));

  const bytes = fc.oneof(
    fc.uint8Array({ maxLength: 200 }).map((b) => Buffer.from(b)),
    mutatedDeploy.map((v) => Buffer.from(JSON.stringify(v))),
    fc.tuple(mutatedDeploy, fc.nat(), fc.uint8Array({ minLength: 1, maxLength: 8 })).map(([v, at, junk]) => {
      const b = Buffer.from(JSON.stringify(v));
      const i = at % (b.length + 1);
      return Buffer.concat([b.subarray(0, i), junk, b.subarray(i)]);
    }),
  );

  it('returns the parsed file or throws INVALID_ARGUMENT', async () => {
    let n = 0;
    await fc.assert(
      fc.asyncProperty(bytes, async (b) => {
        const file = join(dir, `deploy-${n++}.json`);
        await writeFile(file, b);
        try {
          const d = await readDeployJson(file);
          assert.ok(deployJsonSchema.safeParse(d).success, 'readDeployJson returned an invalid file');
        } catch (err) {
          if (!isCairnError(err, 'INVALID_ARGUMENT')) {
            assert.fail(`expected INVALID_ARGUMENT, got ${(err as Error)?.stack ?? String(err)}`);
          }
          assert.match(err.message, /^Cannot (parse|use) /);
          assert.ok(err.message.includes(file), 'the message does not name the file');
        } finally {
          await rm(file, { force: true });
        }
      }),
      params(300),
    );
  });
});

describe('parseJsonBody(deployJsonSchema) under fuzzing', () => {
  const unexpected: unknown[] = [];
  const app = new Hono();
  app.post('/', async (c) => c.json(await parseJsonBody(c, deployJsonSchema, 'create the deployment')));
  app.onError((err, c) => {
    const { status, body } = errorResponse(err, { error: (obj) => unexpected.push(obj) });
    return c.json(body, status as 400);
  });

  const body = fc.oneof(
    fc.string({ unit: 'binary', maxLength: 300 }),
    fc.jsonValue().map((v) => JSON.stringify(v)),
    mutatedDeploy.map((v) => JSON.stringify(v)),
    validDeploy.map((v) => JSON.stringify(v)),
  );

  it('answers 200 with the file or 400 with validations, never 500', async () => {
    await fc.assert(
      fc.asyncProperty(body, async (text) => {
        const res = await app.request('/', { method: 'POST', body: text });
        const json = (await res.json()) as { code?: string; message?: string; validations?: unknown[] };
        assert.equal(unexpected.length, 0, `unexpected error: ${JSON.stringify(unexpected)}`);
        if (res.status === 200) {
          assert.ok(deployJsonSchema.safeParse(json).success, 'the server answered 200 with an invalid file');
          return;
        }
        assert.equal(res.status, 400, JSON.stringify(json));
        assert.ok(json.code === 'BAD_REQUEST' || json.code === 'INVALID_ARGUMENT', json.code);
        assert.match(json.message ?? '', /^Cannot create the deployment: /);
        if (json.code === 'INVALID_ARGUMENT')
          assert.ok((json.validations?.length ?? 0) > 0, 'no validations');
      }),
      params(1_500),
    );
  });
});
