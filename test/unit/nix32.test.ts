import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { describe, it } from 'node:test';
import { isCairnError } from '../../src/lib/cairn-error.ts';
import { decodeNix32, encodeNix32, isNix32, nix32Length } from '../../src/nix/nix32.ts';

describe('nix32', () => {
  it('encodes the sha256 of the empty string as Nix prints it', () => {
    // `nix-hash --type sha256 --to-base32 e3b0c442...` prints this.
    const digest = createHash('sha256').update('').digest();
    assert.equal(encodeNix32(digest), '0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73');
  });

  it('round-trips random byte strings of every length up to 64', () => {
    for (let len = 0; len <= 64; len++) {
      const bytes = new Uint8Array(len).map(() => Math.floor(Math.random() * 256));
      const s = encodeNix32(bytes);
      assert.equal(s.length, nix32Length(len));
      assert.ok(isNix32(s));
      assert.deepEqual(decodeNix32(s, len), bytes);
    }
  });

  it('rejects characters outside the alphabet (e, o, u, t, upper case)', () => {
    for (const bad of ['e', 'o', 'u', 't', 'A', '-']) {
      const s = `${bad}${'0'.repeat(51)}`;
      assert.equal(isNix32(s), false);
      assert.throws(
        () => decodeNix32(s, 32),
        (err) => isCairnError(err, 'INVALID_NIX32') && err.message.includes(`'${bad}'`),
      );
    }
  });

  it('rejects a wrong length and bits beyond the last byte', () => {
    assert.throws(
      () => decodeNix32('0'.repeat(51), 32),
      (err) => isCairnError(err, 'INVALID_NIX32'),
    );
    // 52 characters carry 260 bits; the top four must be zero for 32 bytes.
    assert.throws(() => decodeNix32(`z${'0'.repeat(51)}`, 32), /bits beyond 32 bytes/);
  });
});
