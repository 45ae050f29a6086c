import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import type { z } from 'zod';
import { NIX32_ALPHABET } from '../../src/nix/nix32.ts';
import { agentMessageSchema, serverMessageSchema } from '../../src/protocol/agent-protocol.ts';

/**
 * Property-based fuzzing of the agent protocol's decoders, both ways: whatever arrives on the
 * socket, `safeParse` never throws, a valid message of every type decodes to itself, and an
 * invalid one yields issues the server turns into its one-line error reply. The seed is fixed so
 * that a failure replays (fast-check prints it); set FUZZ_SEED to explore.
 */
const SEED = Number(process.env.FUZZ_SEED ?? 7);
const params = (numRuns: number) => ({ seed: SEED, numRuns, includeErrorInReport: true });

// --- Valid messages --------------------------------------------------------------------------

const storePath = fc
  .tuple(
    fc.string({ unit: fc.constantFrom(...NIX32_ALPHABET), minLength: 32, maxLength: 32 }),
    fc.stringMatching(/^[a-zA-Z0-9+_?=][a-zA-Z0-9+_?=.-]{0,30}$/),
  )
  .map(([h, n]) => `/nix/store/${h}-${n}`);
const id = fc.string({ minLength: 1, maxLength: 64 });
const text = (maxLength: number) => fc.string({ unit: 'grapheme', maxLength });
const step = fc.constantFrom(
  'realise',
  'set-profile',
  'activate',
  'rollback-script',
  'health-check',
  'confirm',
  'rollback',
  'done',
);
const observed = fc.record({
  storePath: fc.option(storePath, { nil: null }),
  generation: fc.option(fc.nat(), { nil: null }),
  kind: fc.option(fc.constantFrom('nixos', 'nix-darwin', 'home-manager', 'plain'), { nil: null }),
  system: text(100),
  hostname: text(100),
  agentVersion: text(50),
  nixVersion: text(100),
  profile: text(200),
});
const result = fc.record({
  deploymentId: id,
  state: fc.constantFrom('succeeded', 'rolled-back', 'failed', 'cancelled'),
  step: fc.option(step, { nil: null }),
  reason: fc.option(text(200), { nil: null }),
  rebootRequired: fc.boolean(),
});
const lit = <T extends string>(type: T) => fc.constant(type);

/** One valid message of every type the agent sends. */
const agentMessage = fc.oneof(
  fc.record({
    type: lit('hello'),
    protocol: fc.integer({ min: 1, max: 1000 }),
    observed,
    running: fc.option(id, { nil: null }),
    unreported: fc.array(result, { maxLength: 3 }),
  }),
  fc.record({ type: lit('progress'), deploymentId: id, step }),
  fc.record({
    type: lit('log'),
    deploymentId: id,
    lines: fc.array(fc.record({ t: fc.nat(), text: text(200) }), { minLength: 1, maxLength: 5 }),
  }),
  fc.record({ type: lit('result'), result, observed }),
  fc.record({ type: lit('observed'), observed }),
  fc.record({ type: lit('confirm'), deploymentId: id }),
);

const programPath = fc
  .array(fc.stringMatching(/^[A-Za-z0-9_+-][A-Za-z0-9._+-]{0,9}$/), { minLength: 1, maxLength: 3 })
  .map((segments) => segments.join('/'));
const timing = {
  timeoutSeconds: fc.integer({ min: 1, max: 3600 }),
  retries: fc.integer({ min: 0, max: 100 }),
  intervalSeconds: fc.integer({ min: 0, max: 3600 }),
  graceSeconds: fc.integer({ min: 0, max: 3600 }),
};
// Every field given, defaults included, so that a decoded message equals the one sent.
const healthCheck = fc.oneof(
  fc.record({
    // A program inside the closure (relative, no `..`), then any arguments.
    command: fc
      .tuple(programPath, fc.array(fc.string({ minLength: 1, maxLength: 20 }), { maxLength: 2 }))
      .map(([program, args]) => [program, ...args]),
    ...timing,
  }),
  fc.record({
    http: fc.integer({ min: 1, max: 65535 }).map((p) => `http://127.0.0.1:${p}/`),
    status: fc.integer({ min: 100, max: 599 }),
    ...timing,
  }),
  fc.record({
    systemd: fc.array(fc.stringMatching(/^[A-Za-z0-9:_.@-]{1,20}$/), { minLength: 1, maxLength: 3 }),
    ...timing,
  }),
);
const desired = fc.option(
  fc.record({
    id,
    storePath,
    rollbackScript: fc.option(storePath, { nil: null }),
    exit4: fc.constantFrom('fail', 'tolerate'),
    healthChecks: fc.array(healthCheck, { maxLength: 3 }),
    confirmTimeoutSeconds: fc.integer({ min: 1, max: 3600 }),
    rollback: fc.boolean(),
  }),
  { nil: null },
);

/** One valid message of every type the server sends. */
const serverMessage = fc.oneof(
  fc.record({
    type: lit('welcome'),
    protocol: fc.integer({ min: 1, max: 1000 }),
    agent: fc.string(),
    caches: fc.array(
      fc.record({
        url: fc.stringMatching(/^[a-z0-9-]{1,10}$/).map((h) => `https://${h}.example/cache/main`),
        publicKey: fc.string(),
        private: fc.boolean(),
      }),
      { maxLength: 3 },
    ),
    desired,
  }),
  fc.record({ type: lit('desired'), desired }),
  fc.record({ type: lit('cancel'), deploymentId: id }),
  fc.record({ type: lit('confirmed'), deploymentId: id }),
  fc.record({ type: lit('error'), code: fc.string(), message: fc.string() }),
);

// --- Mutations -------------------------------------------------------------------------------

type Json = unknown;
const hostileValue = fc.oneof(
  fc.jsonValue({ maxDepth: 3 }),
  fc.constantFrom(
    '',
    'hello',
    'log',
    'welcome',
    '__proto__',
    '/nix/store/',
    '\u0000',
    '\uD800',
    'x'.repeat(65),
  ),
  fc.constantFrom(-1, 0, 0.5, 2 ** 53, 1e308, -0),
  fc.integer({ min: 1_000, max: 100_000 }).map((n) => 'x'.repeat(n)),
  fc.integer({ min: 101, max: 2_000 }).map((n) => Array.from({ length: n }, () => ({ t: 0, text: 'x' }))),
);
const hostileKey = fc.oneof(
  fc.string(),
  fc.constantFrom('type', '__proto__', 'constructor', 'toString', 'protocol', 'observed', 'lines', 'desired'),
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

const own = (o: Record<string, Json>, k: string, value: Json) =>
  // defineProperty, not assignment: a `__proto__` key stays an own key, as JSON.parse makes it.
  Object.defineProperty(o, k, { value, enumerable: true, writable: true, configurable: true });

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
  const copy: Record<string, Json> = {};
  for (const [k, x] of Object.entries(v as object)) own(copy, k, x);
  const next = edit(copy[head], rest, f);
  if (next === undefined) delete copy[head];
  else own(copy, String(head), next);
  return copy;
}

const isObject = (x: Json): x is Record<string, Json> =>
  x !== null && typeof x === 'object' && !Array.isArray(x);

const mutation: fc.Arbitrary<(v: Json) => Json> = fc.oneof(
  fc.tuple(fc.nat(), hostileValue).map(([i, x]) => (v: Json) => {
    const ps = paths(v);
    return edit(v, ps[i % ps.length]!, () => x); // a value replaced
  }),
  fc.nat().map((i) => (v: Json) => {
    const ps = paths(v).slice(1);
    return ps.length === 0 ? v : edit(v, ps[i % ps.length]!, () => undefined); // a field or element removed
  }),
  fc.tuple(fc.nat(), hostileKey, hostileValue).map(([i, k, x]) => (v: Json) => {
    const ps = paths(v).filter((p) =>
      isObject(p.reduce<Json>((o, key) => (o as Record<string, Json>)[key], v)),
    );
    return ps.length === 0 ? v : edit(v, ps[i % ps.length]!, (o) => edit(o, [k], () => x)); // a field added
  }),
  fc
    .constantFrom(
      'hello',
      'progress',
      'log',
      'result',
      'observed',
      'confirm',
      'welcome',
      'desired',
      'cancel',
      'confirmed',
      'error',
      'HELLO',
      '',
    )
    .map(
      (type) => (v: Json) => (isObject(v) ? edit(v, ['type'], () => type) : v), // another type, same fields
    ),
);
const mutated = (valid: fc.Arbitrary<Json>) =>
  fc
    .tuple(valid, fc.array(mutation, { minLength: 1, maxLength: 3 }))
    .map(([m, ms]) => ms.reduce((v, f) => f(v), m));

// --- Checks ----------------------------------------------------------------------------------

/**
 * Decodes a frame as the server's agent hub does (JSON.parse, then safeParse, then the first
 * issue as the reason); returns the reason, or undefined for a valid message. Only JSON.parse
 * may throw, and only a SyntaxError.
 */
function decodeFrame(schema: z.ZodType, text: string): string | undefined {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    assert.ok(err instanceof SyntaxError, `JSON.parse threw ${(err as Error)?.stack}`);
    return (err as Error).message;
  }
  return reason(schema, json);
}

function reason(schema: z.ZodType, json: unknown): string | undefined {
  const parsed = schema.safeParse(json);
  if (parsed.success) {
    // Decoding is idempotent: what was accepted is accepted again as it is.
    assert.deepEqual(schema.parse(parsed.data), parsed.data);
    return undefined;
  }
  assert.ok(parsed.error.issues.length > 0, 'invalid without issues');
  for (const issue of parsed.error.issues) {
    assert.ok(Array.isArray(issue.path), 'issue without a path');
    assert.ok(typeof issue.message === 'string' && issue.message.length > 0, 'issue without a message');
  }
  const issue = parsed.error.issues[0];
  return `${issue?.path.join('.') || 'message'}: ${issue?.message}`;
}

const both = [
  ['agentMessageSchema', agentMessageSchema, agentMessage],
  ['serverMessageSchema', serverMessageSchema, serverMessage],
] as const;

for (const [name, schema, valid] of both) {
  describe(`${name} under fuzzing`, () => {
    it('decodes a valid message of every type to itself', () => {
      fc.assert(
        fc.property(valid, (m) => {
          const sent = JSON.parse(JSON.stringify(m));
          const parsed = schema.safeParse(sent);
          assert.ok(parsed.success, JSON.stringify(parsed.error?.issues));
          assert.deepEqual(parsed.data, sent);
        }),
        params(1_000),
      );
    });

    it('ignores an unknown field added to any object of a valid message, as a newer peer may send', () => {
      // The protocol's forward compatibility: a field a newer server or agent adds is stripped,
      // and the message decodes to what the older side knows.
      const unknownKey = fc.stringMatching(/^future_[a-z]{1,8}$/);
      fc.assert(
        fc.property(valid, fc.nat(), unknownKey, fc.jsonValue({ maxDepth: 2 }), (m, i, k, x) => {
          const sent = JSON.parse(JSON.stringify(m));
          const objects = paths(sent).filter((p) =>
            isObject(p.reduce<Json>((o, key) => (o as Record<string, Json>)[key], sent)),
          );
          const extended = edit(sent, objects[i % objects.length]!, (o) => edit(o, [k], () => x));
          const parsed = schema.safeParse(extended);
          assert.ok(parsed.success, JSON.stringify(parsed.error?.issues));
          assert.deepEqual(parsed.data, sent);
        }),
        params(1_000),
      );
    });

    it('still rejects a message of an unknown type', () => {
      fc.assert(
        fc.property(valid, fc.stringMatching(/^future-[a-z]{1,8}$/), (m, type) => {
          assert.equal(schema.safeParse({ ...JSON.parse(JSON.stringify(m)), type }).success, false);
        }),
        params(200),
      );
    });

    it('never throws on arbitrary frames and JSON values', () => {
      fc.assert(
        fc.property(fc.string({ unit: 'binary', maxLength: 200 }), (s) => void decodeFrame(schema, s)),
        params(2_000),
      );
      fc.assert(
        fc.property(fc.jsonValue(), (v) => void decodeFrame(schema, JSON.stringify(v))),
        params(2_000),
      );
      const anything = fc.anything({
        withBigInt: true,
        withBoxedValues: true,
        withDate: true,
        withMap: true,
        withNullPrototype: true,
        withSet: true,
        withSparseArray: true,
        withTypedArray: true,
      });
      fc.assert(
        fc.property(anything, (v) => void reason(schema, v)),
        params(1_000),
      );
    });

    it('never throws on mutated valid messages', (t) => {
      // Whether a mutant is still valid is not judged here (the schema under test would be the
      // judge): the hand-written cases below say which messages must be rejected.
      let accepted = 0;
      fc.assert(
        fc.property(mutated(valid), (m) => {
          if (decodeFrame(schema, JSON.stringify(m)) === undefined) accepted++;
        }),
        params(3_000),
      );
      t.diagnostic(`${accepted} of 3000 mutated messages were still valid`);
    });
  });
}

// --- Hand-written invalid messages -----------------------------------------------------------

const PATH = '/nix/store/ca326ks7frq1n79h5d3i7bcqpy4ldr77-system';
const OBSERVED = {
  storePath: PATH,
  generation: 3,
  kind: 'nixos',
  system: 'x86_64-linux',
  hostname: 'web1',
  agentVersion: '0.1.0',
  nixVersion: '2.8.0',
  profile: '/nix/var/nix/profiles/system',
};
const RESULT = { deploymentId: '7', state: 'succeeded', step: null, reason: null, rebootRequired: false };
const HELLO = { type: 'hello', protocol: 1, observed: OBSERVED, running: null, unreported: [] };
const LOG = { type: 'log', deploymentId: '7', lines: [{ t: 0, text: 'x' }] };
const CLOSURE = {
  type: 'closure',
  deploymentId: '7',
  paths: [{ path: PATH, narSize: 10, references: [PATH] }],
  final: true,
};
const DESIRED = {
  id: '7',
  storePath: PATH,
  rollbackScript: null,
  exit4: 'fail',
  healthChecks: [],
  confirmTimeoutSeconds: 60,
  rollback: false,
};
const WELCOME = { type: 'welcome', protocol: 1, agent: 'web1', caches: [], desired: DESIRED };
const PLAN = {
  type: 'plan',
  requestId: 'r1',
  storePath: PATH,
  rollbackScript: null,
  dryActivate: true,
  timeoutSeconds: 30,
};
const DRY = {
  status: 'done',
  stop: [],
  restart: ['a.service'],
  start: [],
  reload: [],
  rebootRequired: false,
  notes: [],
};
const PLAN_RESULT = {
  type: 'plan-result',
  requestId: 'r1',
  plan: { fetch: [PATH], build: [], truncated: false, freeBytes: 1, kind: 'nixos', dryActivate: DRY },
  error: null,
};

/** `base` with `key` set to `value` (or removed, for undefined) at `path`. */
function withField(base: Json, path: ReadonlyArray<string | number>, value: Json): Json {
  return edit(base, path, () => value);
}

/**
 * Messages the protocol (docs and the peer's expectations, not the schema) says are invalid:
 * a wrong type, a missing field, a value out of range. Each with the path an issue must name.
 * No case adds an unknown field: newer peers may send fields an older one does not know.
 */
const INVALID_AGENT_MESSAGES: ReadonlyArray<readonly [string, Json, string]> = [
  ['no message, only null', null, ''],
  ['an array', [HELLO], ''],
  ['a string', 'hello', ''],
  ['hello with a negative protocol', withField(HELLO, ['protocol'], -1), 'protocol'],
  ['hello with a fractional protocol', withField(HELLO, ['protocol'], 1.5), 'protocol'],
  ['hello with protocol as a string', withField(HELLO, ['protocol'], '1'), 'protocol'],
  ['hello without observed', withField(HELLO, ['observed'], undefined), 'observed'],
  ['hello without unreported', withField(HELLO, ['unreported'], undefined), 'unreported'],
  [
    'a store path with a short hash',
    withField(HELLO, ['observed', 'storePath'], '/nix/store/abc-x'),
    'observed.storePath',
  ],
  [
    'a store path outside /nix/store',
    withField(HELLO, ['observed', 'storePath'], PATH.replace('/nix/', '/gnu/')),
    'observed.storePath',
  ],
  [
    'a path inside a store path',
    withField(HELLO, ['observed', 'storePath'], `${PATH}/bin`),
    'observed.storePath',
  ],
  ['a negative generation', withField(HELLO, ['observed', 'generation'], -1), 'observed.generation'],
  ['an unknown profile kind', withField(HELLO, ['observed', 'kind'], 'windows'), 'observed.kind'],
  [
    'a 256-character host name',
    withField(HELLO, ['observed', 'hostname'], 'h'.repeat(256)),
    'observed.hostname',
  ],
  ['an empty running id', withField(HELLO, ['running'], ''), 'running'],
  ['a 65-character running id', withField(HELLO, ['running'], 'i'.repeat(65)), 'running'],
  ['101 unreported results', withField(HELLO, ['unreported'], Array(101).fill(RESULT)), 'unreported'],
  [
    'an unreported result still running',
    withField(HELLO, ['unreported'], [{ ...RESULT, state: 'running' }]),
    'unreported.0.state',
  ],
  ['progress at an unknown step', { type: 'progress', deploymentId: '7', step: 'reboot' }, 'step'],
  ['progress without a deployment', { type: 'progress', step: 'activate' }, 'deploymentId'],
  ['a log without lines', withField(LOG, ['lines'], []), 'lines'],
  ['a log of 1001 lines', withField(LOG, ['lines'], Array(1001).fill({ t: 0, text: 'x' })), 'lines'],
  ['a log line at a negative time', withField(LOG, ['lines', 0, 't'], -1), 'lines.0.t'],
  ['a log line at a fractional time', withField(LOG, ['lines', 0, 't'], 0.5), 'lines.0.t'],
  [
    'a log line of 16385 characters',
    withField(LOG, ['lines', 0, 'text'], 'x'.repeat(16_385)),
    'lines.0.text',
  ],
  ['a log line with a negative number', withField(LOG, ['lines', 0, 'n'], -1), 'lines.0.n'],
  ['a log line from an empty source', withField(LOG, ['lines', 0, 'src'], ''), 'lines.0.src'],
  [
    'a result that is pending',
    { type: 'result', result: { ...RESULT, state: 'pending' }, observed: OBSERVED },
    'result.state',
  ],
  [
    'a result without rebootRequired',
    { type: 'result', result: withField(RESULT, ['rebootRequired'], undefined), observed: OBSERVED },
    'result.rebootRequired',
  ],
  [
    'a result with a 4001-character reason',
    { type: 'result', result: { ...RESULT, reason: 'r'.repeat(4001) }, observed: OBSERVED },
    'result.reason',
  ],
  ['a result without observed', { type: 'result', result: RESULT }, 'observed'],
  ['confirm without a deployment', { type: 'confirm' }, 'deploymentId'],
  ['a closure path of negative size', withField(CLOSURE, ['paths', 0, 'narSize'], -1), 'paths.0.narSize'],
  [
    'a closure reference that is not a store path',
    withField(CLOSURE, ['paths', 0, 'references'], ['bin/sh']),
    'paths.0.references.0',
  ],
  ['a closure without final', withField(CLOSURE, ['final'], undefined), 'final'],
  ['a plan result without a request id', withField(PLAN_RESULT, ['requestId'], undefined), 'requestId'],
  [
    'a planned fetch that is not a store path',
    withField(PLAN_RESULT, ['plan', 'fetch'], ['/tmp/x']),
    'plan.fetch.0',
  ],
  [
    'a plan of 8001 paths to fetch',
    withField(PLAN_RESULT, ['plan', 'fetch'], Array(8001).fill(PATH)),
    'plan.fetch',
  ],
  ['a plan with negative free space', withField(PLAN_RESULT, ['plan', 'freeBytes'], -1), 'plan.freeBytes'],
  [
    'a dry-activate of an unknown status',
    withField(PLAN_RESULT, ['plan', 'dryActivate', 'status'], 'maybe'),
    'plan.dryActivate.status',
  ],
  [
    'a dry-activate without its units to restart',
    withField(PLAN_RESULT, ['plan', 'dryActivate', 'restart'], undefined),
    'plan.dryActivate.restart',
  ],
  ['a plan result without error', withField(PLAN_RESULT, ['error'], undefined), 'error'],
];

const INVALID_SERVER_MESSAGES: ReadonlyArray<readonly [string, Json, string]> = [
  ['welcome with protocol 0', withField(WELCOME, ['protocol'], 0), 'protocol'],
  ['welcome without caches', withField(WELCOME, ['caches'], undefined), 'caches'],
  [
    'a cache whose URL is not a URL',
    withField(WELCOME, ['caches'], [{ url: 'not a url', publicKey: 'k', private: false }]),
    'caches.0.url',
  ],
  [
    'a cache private as a string',
    withField(WELCOME, ['caches'], [{ url: 'https://c.example/cache/main', publicKey: 'k', private: 'yes' }]),
    'caches.0.private',
  ],
  ['welcome without desired', withField(WELCOME, ['desired'], undefined), 'desired'],
  [
    'desired of an invalid store path',
    withField(WELCOME, ['desired', 'storePath'], '/nix/store/x'),
    'desired.storePath',
  ],
  ['desired with an empty id', withField(WELCOME, ['desired', 'id'], ''), 'desired.id'],
  [
    'desired with an unknown exit4 policy',
    withField(WELCOME, ['desired', 'exit4'], 'ignore'),
    'desired.exit4',
  ],
  [
    'desired with a confirm timeout of 0',
    withField(WELCOME, ['desired', 'confirmTimeoutSeconds'], 0),
    'desired.confirmTimeoutSeconds',
  ],
  ['desired without rollback', withField(WELCOME, ['desired', 'rollback'], undefined), 'desired.rollback'],
  [
    'desired with an empty health check',
    withField(WELCOME, ['desired', 'healthChecks'], [{}]),
    'desired.healthChecks.0',
  ],
  ['a desired message without desired', { type: 'desired' }, 'desired'],
  ['cancel of a 65-character id', { type: 'cancel', deploymentId: 'i'.repeat(65) }, 'deploymentId'],
  ['confirmed without a deployment', { type: 'confirmed' }, 'deploymentId'],
  ['an error without a message', { type: 'error', code: 'X' }, 'message'],
  ['going-away within 0 s', { type: 'going-away', reconnectWithinSeconds: 0 }, 'reconnectWithinSeconds'],
  ['going-away within 601 s', { type: 'going-away', reconnectWithinSeconds: 601 }, 'reconnectWithinSeconds'],
  ['a plan of a path outside the store', withField(PLAN, ['storePath'], '/etc/passwd'), 'storePath'],
  ['a plan within 0 s', withField(PLAN, ['timeoutSeconds'], 0), 'timeoutSeconds'],
  ['a plan without dryActivate', withField(PLAN, ['dryActivate'], undefined), 'dryActivate'],
];

describe('agent protocol messages written by hand', () => {
  const cases = [
    ['agentMessageSchema', agentMessageSchema, HELLO, INVALID_AGENT_MESSAGES],
    ['serverMessageSchema', serverMessageSchema, WELCOME, INVALID_SERVER_MESSAGES],
  ] as const;
  for (const [name, schema, valid, invalid] of cases) {
    it(`${name} rejects every one of ${invalid.length} invalid messages, naming the field`, () => {
      // The base the cases are made from is valid: each case fails for its own edit.
      assert.equal(decodeFrame(schema, JSON.stringify(valid)), undefined);
      for (const more of name === 'agentMessageSchema' ? [PLAN_RESULT] : [PLAN])
        assert.equal(decodeFrame(schema, JSON.stringify(more)), undefined);
      const accepted: string[] = [];
      for (const [label, message, path] of invalid) {
        const parsed = schema.safeParse(JSON.parse(JSON.stringify(message)));
        if (parsed.success) {
          accepted.push(label);
          continue;
        }
        const paths = parsed.error.issues.map((i) => i.path.join('.'));
        assert.ok(
          paths.some((p) => p === path || p.startsWith(`${path}.`) || (path === '' && p === '')),
          `${label}: no issue at ${path || 'the message'}, only at ${JSON.stringify(paths)}`,
        );
      }
      assert.deepEqual(accepted, [], 'accepted invalid messages');
    });
  }
});
