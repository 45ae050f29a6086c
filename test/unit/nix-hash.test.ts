import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { describe, it } from 'node:test';
import { isCairnError } from '../../src/lib/cairn-error.ts';
import { compressHash, formatNixHash, formatSriHash, parseNixHash } from '../../src/nix/nix-hash.ts';

const digest = createHash('sha256').update('cairn').digest();
const hex = digest.toString('hex');

describe('parseNixHash', () => {
  it('reads nix32, base16, base64 and SRI forms of one sha256 alike', () => {
    const nix32 = formatNixHash({ algorithm: 'sha256', digest });
    const forms = [
      nix32,
      `sha256:${hex}`,
      `sha256:${digest.toString('base64')}`,
      `sha256-${digest.toString('base64')}`,
    ];
    for (const form of forms) {
      const h = parseNixHash(form);
      assert.equal(h.algorithm, 'sha256');
      assert.equal(Buffer.from(h.digest).toString('hex'), hex, form);
    }
    assert.equal(formatSriHash(parseNixHash(nix32)), `sha256-${digest.toString('base64')}`);
  });

  it('names the fault in malformed hashes', () => {
    const cases: Array<[string, RegExp]> = [
      ['', /expected <algorithm>:<digest>/],
      ['sha3:abc', /unsupported algorithm 'sha3'/],
      [`sha256:${hex.slice(2)}`, /wrong length/],
      [`sha256:${'e'.repeat(52)}`, /not valid nix32/],
      ['sha256-AAAA', /wrong length/],
    ];
    for (const [input, msg] of cases) {
      assert.throws(
        () => parseNixHash(input),
        (err) => isCairnError(err, 'INVALID_HASH') && msg.test(err.message),
        input,
      );
    }
  });
});

describe('compressHash', () => {
  it('folds a digest by XOR into the requested size', () => {
    const out = compressHash(new Uint8Array([1, 2, 3, 4, 5]), 2);
    assert.deepEqual([...out], [1 ^ 3 ^ 5, 2 ^ 4]);
  });
});
