import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isCairnError } from '../../src/lib/cairn-error.ts';
import {
  formatPublicKey,
  formatSecretKey,
  generateSecretKey,
  parsePublicKey,
  parseSecretKey,
  parseSignature,
  signDetached,
  verifyDetached,
} from '../../src/nix/signing-key.ts';

// A throwaway key pair made by `nix-store --generate-binary-cache-key test-1 sk pk` (Nix 2.8).
const SECRET_B64 = 'Xn9n5CNN4OgktzXoUjjV3HGAfYDwk7evwfWNbZeSs08OAKw+JY+QIZy07KdFatXMg+HJ8X6T3zob26BMmu5rVw==';
const SECRET = `test-1:${SECRET_B64}`;
const PUBLIC = 'test-1:DgCsPiWPkCGctOynRWrVzIPhyfF+k986G9ugTJrua1c=';
const SEED = Buffer.from(SECRET_B64, 'base64').subarray(0, 32);

/** Asserts that `fn` throws a CairnError with `code` whose message matches `msg`. */
function assertFault(
  fn: () => unknown,
  code: 'INVALID_KEY' | 'INVALID_SIGNATURE',
  msg: RegExp,
  label: string,
) {
  assert.throws(fn, (err) => {
    assert.ok(isCairnError(err, code), label);
    assert.match(err.message, msg, label);
    // No part of the secret key's base64 may leak into a message.
    for (const secret of [SECRET_B64, SECRET_B64.slice(0, 43), SEED.toString('base64').slice(0, 20)]) {
      assert.ok(!err.message.includes(secret), `${label}: message leaks key material`);
    }
    return true;
  });
}

describe('parseSecretKey', () => {
  it('reads a key made by nix-store --generate-binary-cache-key', () => {
    const key = parseSecretKey(SECRET);
    assert.equal(key.name, 'test-1');
    assert.equal(formatPublicKey(key.publicKey), PUBLIC);
    assert.equal(formatSecretKey(key), SECRET);
  });

  it('accepts one trailing newline, as in a key file written by an editor', () => {
    assert.equal(formatSecretKey(parseSecretKey(`${SECRET}\n`)), SECRET);
  });

  it('rejects malformed keys naming the fault without showing key material', () => {
    const otherPublic = Buffer.alloc(32, 7);
    const mismatched = Buffer.concat([SEED, otherPublic]).toString('base64');
    const cases: Array<[string, string, RegExp]> = [
      [
        'no colon',
        SECRET_B64,
        /^Cannot parse secret key: expected '<name>:<base64>' but found no colon \(88 characters\)$/,
      ],
      ['empty name', `:${SECRET_B64}`, /the key name is empty \(""\)$/],
      ['space in name', `a b:${SECRET_B64}`, /contains a colon, whitespace/],
      [
        'public key',
        PUBLIC,
        /expected 64 bytes of canonical padded base64 after the name \(test-1: 32 bytes\)$/,
      ],
      [
        'not base64',
        `test-1:${SECRET_B64.replace('X', '*')}`,
        /expected 64 bytes .*\(test-1: 88 characters, not canonical base64\)$/,
      ],
      ['unpadded', `test-1:${SECRET_B64.replace(/=+$/, '')}`, /expected 64 bytes/],
      ['two newlines', `${SECRET}\n\n`, /expected 64 bytes/],
      ['mismatched halves', `test-1:${mismatched}`, /public half does not match its seed \(test-1\)$/],
    ];
    for (const [label, text, msg] of cases)
      assertFault(() => parseSecretKey(text), 'INVALID_KEY', msg, label);
  });
});

describe('parsePublicKey', () => {
  it('reads a public key as trusted-public-keys lists it', () => {
    const key = parsePublicKey(PUBLIC);
    assert.equal(key.name, 'test-1');
    assert.equal(formatPublicKey(key), PUBLIC);
  });

  it('rejects malformed keys naming the fault', () => {
    const cases: Array<[string, string, RegExp]> = [
      ['no colon', 'DgCsPiWPkCGctOynRWrVzIPhyfF+k986G9ugTJrua1c=', /no colon \(44 characters\)$/],
      ['empty name', ':DgCsPiWPkCGctOynRWrVzIPhyfF+k986G9ugTJrua1c=', /the key name is empty/],
      ['secret key given', SECRET, /expected 32 bytes .*\(test-1: 64 bytes\)$/],
      [
        'short',
        'test-1:AAAA',
        /expected 32 bytes of canonical padded base64 after the name \(test-1: 3 bytes\)$/,
      ],
      ['empty key', 'test-1:', /expected 32 bytes/],
    ];
    for (const [label, text, msg] of cases)
      assertFault(() => parsePublicKey(text), 'INVALID_KEY', msg, label);
  });
});

describe('generateSecretKey', () => {
  it('makes a key pair that formats, parses back and signs', () => {
    const key = generateSecretKey('cache.example.org-1');
    const text = formatSecretKey(key);
    assert.match(text, /^cache\.example\.org-1:[A-Za-z0-9+/]{86}==$/);
    const again = parseSecretKey(text);
    assert.equal(formatPublicKey(again.publicKey), formatPublicKey(key.publicKey));
    const sig = signDetached('message', again);
    assert.equal(verifyDetached('message', sig, { trustedKeys: [key.publicKey] }), 'cache.example.org-1');
  });

  it('rejects names Nix cannot use', () => {
    for (const name of ['', 'a:b', 'a b', 'a\nb']) {
      assertFault(
        () => generateSecretKey(name),
        'INVALID_KEY',
        /^Cannot generate signing key: the key name/,
        name,
      );
    }
  });
});

describe('signDetached and verifyDetached', () => {
  it('verify only with a trusted key of the same name over the same message', () => {
    const key = parseSecretKey(SECRET);
    const other = generateSecretKey('test-1');
    const renamed = { ...key.publicKey, name: 'test-2' };
    const sig = signDetached('hello', key);
    assert.match(sig, /^test-1:[A-Za-z0-9+/]{86}==$/);
    assert.equal(
      verifyDetached('hello', sig, { trustedKeys: [other.publicKey, parsePublicKey(PUBLIC)] }),
      'test-1',
    );
    assert.equal(verifyDetached('hello!', sig, { trustedKeys: [key.publicKey] }), undefined);
    assert.equal(verifyDetached('hello', sig, { trustedKeys: [other.publicKey] }), undefined);
    assert.equal(verifyDetached('hello', sig, { trustedKeys: [renamed] }), undefined);
    assert.equal(verifyDetached('hello', sig, { trustedKeys: [] }), undefined);
  });
});

describe('parseSignature', () => {
  it('splits a signature into key name and 64 bytes', () => {
    const sig = parseSignature(`test-1:${Buffer.alloc(64, 1).toString('base64')}`);
    assert.equal(sig.keyName, 'test-1');
    assert.equal(sig.bytes.length, 64);
  });

  it('rejects malformed signatures naming the fault', () => {
    const cases: Array<[string, string, RegExp]> = [
      [
        'no colon',
        'garbage',
        /^Cannot parse signature: expected '<name>:<base64>' but found no colon \(7 characters\)$/,
      ],
      ['empty name', `:${Buffer.alloc(64).toString('base64')}`, /the key name is empty/],
      ['short', `k:${Buffer.alloc(63).toString('base64')}`, /expected 64 bytes/],
      ['not base64', 'k:!!!!', /expected 64 bytes/],
    ];
    for (const [label, text, msg] of cases) {
      assertFault(() => parseSignature(text), 'INVALID_SIGNATURE', msg, label);
      assertFault(() => verifyDetached('m', text, { trustedKeys: [] }), 'INVALID_SIGNATURE', msg, label);
    }
  });
});
