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
      fc.array(fc.string({ minLength: 1, maxLength: 20 }), { minLength: 1, maxLength: 4 }),
      fc.record(timing, optional),
    )
    .map(([command, t]) => ({ command, ...t })),
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
    let valid = 0;
    fc.assert(
      fc.property(mutatedDeploy, (v) => {
        // Through JSON, as the CLI and server see it.
        if (validate(JSON.parse(JSON.stringify(v)))) valid++;
      }),
      params(3_000),
    );
    assert.ok(valid < 2_500, `${valid} of 3000 mutants valid`);
    t.diagnostic(`${valid} of 3000 mutated files were still valid`);
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
