import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isCairnError } from '../../src/lib/cairn-error.ts';
import { type NarInfo, parseNarInfo } from '../../src/nix/narinfo.ts';
import { narInfoFingerprint, signNarInfo, verifyNarInfo } from '../../src/nix/narinfo-signature.ts';
import { formatSriHash, parseNixHash } from '../../src/nix/nix-hash.ts';
import { generateSecretKey, parsePublicKey, parseSecretKey } from '../../src/nix/signing-key.ts';

// Throwaway keys made by `nix-store --generate-binary-cache-key` (Nix 2.8), and the narinfo
// `nix copy` wrote for a path signed by both with `nix store sign --key-file`.
const SECRET_1 =
  'test-1:Xn9n5CNN4OgktzXoUjjV3HGAfYDwk7evwfWNbZeSs08OAKw+JY+QIZy07KdFatXMg+HJ8X6T3zob26BMmu5rVw==';
const PUBLIC_1 = parsePublicKey('test-1:DgCsPiWPkCGctOynRWrVzIPhyfF+k986G9ugTJrua1c=');
const PUBLIC_2 = parsePublicKey('test-2:7w46eYK8J3XM/jS7K3TxFRU1PRcbvF68BQpOnUBaCLQ=');
const A = 'ca326ks7frq1n79h5d3i7bcqpy4ldr77-exp-a';
const B = 'jbhzf171gy1z00iwvh4f726gw1s15zqf-exp-b';
const SIG_1 =
  'test-1:Kab8SXAsA1vG+iGsEZmSwFIxmluSN8IokJlSiAhvZJd3QUUpRKIEMUAYvgibFid6HIqXbNvZMCK6/VdE3a78CQ==';
const NIX_WRITTEN = parseNarInfo(
  [
    `StorePath: /nix/store/${B}`,
    'URL: nar/10jid5hgi74jn835iw1b01y57b29dkki2mshs0a30n8rhbllqmpv.nar',
    'Compression: none',
    'FileHash: sha256:10jid5hgi74jn835iw1b01y57b29dkki2mshs0a30n8rhbllqmpv',
    'FileSize: 168',
    'NarHash: sha256:10jid5hgi74jn835iw1b01y57b29dkki2mshs0a30n8rhbllqmpv',
    'NarSize: 168',
    `References: ${A}`,
    'Deriver: gv9clc4rimxlvy5jp3gjnnw6nf5m68l6-exp-b.drv',
    `Sig: ${SIG_1}`,
    'Sig: test-2:jQ6YPlhoWLx0NlJE5oDUpzGfLbSlAlwhhq4kLhCLdx19/WxV6sXOEGWDtx0NTijIH+hPcOGiVDIAas/2DRawAg==',
    '',
  ].join('\n'),
);
const FINGERPRINT = `1;/nix/store/${B};sha256:10jid5hgi74jn835iw1b01y57b29dkki2mshs0a30n8rhbllqmpv;168;/nix/store/${A}`;

describe('narInfoFingerprint', () => {
  it('builds the text Nix signs', () => {
    assert.equal(narInfoFingerprint(NIX_WRITTEN), FINGERPRINT);
  });

  it('writes the NAR hash as sha256:<nix32> whatever form the narinfo used', () => {
    const sri = parseNixHash(formatSriHash(NIX_WRITTEN.narHash));
    assert.equal(narInfoFingerprint({ ...NIX_WRITTEN, narHash: sri }), FINGERPRINT);
  });

  it('sorts and deduplicates references and joins them as full paths', () => {
    const info: NarInfo = { ...NIX_WRITTEN, references: [B, A, B] };
    assert.match(narInfoFingerprint(info), new RegExp(`;168;/nix/store/${A},/nix/store/${B}$`));
    assert.match(narInfoFingerprint({ ...NIX_WRITTEN, references: [] }), /;168;$/);
  });

  it('refuses a NAR hash other than sha256 and a NAR size of 0', () => {
    const sha512 = { algorithm: 'sha512', digest: new Uint8Array(64) } as const;
    for (const info of [
      { ...NIX_WRITTEN, narHash: sha512 },
      { ...NIX_WRITTEN, narSize: 0 },
    ]) {
      assert.throws(
        () => narInfoFingerprint(info),
        (err) =>
          isCairnError(err, 'INVALID_NARINFO') &&
          /^Cannot compute the narinfo fingerprint: NarHash is not sha256|NarSize is 0/.test(err.message),
      );
    }
  });
});

describe('signNarInfo', () => {
  it('makes the same signature as Nix with the same key', () => {
    assert.equal(signNarInfo(NIX_WRITTEN, parseSecretKey(SECRET_1)), SIG_1);
  });
});

describe('verifyNarInfo', () => {
  it('returns the trusted keys whose signatures are valid', () => {
    assert.deepEqual(verifyNarInfo(NIX_WRITTEN, [PUBLIC_1, PUBLIC_2]), ['test-1', 'test-2']);
    assert.deepEqual(verifyNarInfo(NIX_WRITTEN, [PUBLIC_2]), ['test-2']);
    assert.deepEqual(verifyNarInfo(NIX_WRITTEN, [generateSecretKey('test-1').publicKey]), []);
    assert.deepEqual(verifyNarInfo(NIX_WRITTEN, []), []);
  });

  it('rejects signatures once a signed field changes', () => {
    const changed: NarInfo[] = [
      { ...NIX_WRITTEN, narSize: 169 },
      { ...NIX_WRITTEN, references: [] },
      { ...NIX_WRITTEN, storePath: `/nix/store/${A}` },
    ];
    for (const info of changed) assert.deepEqual(verifyNarInfo(info, [PUBLIC_1, PUBLIC_2]), []);
  });

  it('ignores unsigned fields, as Nix does', () => {
    const { deriver: _, ...rest } = NIX_WRITTEN;
    const info = { ...rest, url: 'nar/other.nar.xz', compression: 'xz', system: 'x86_64-linux' };
    assert.deepEqual(verifyNarInfo(info, [PUBLIC_1]), ['test-1']);
  });

  it('verifies a signature Cairn made', () => {
    const key = generateSecretKey('cairn-1');
    const info = { ...NIX_WRITTEN, sigs: [signNarInfo(NIX_WRITTEN, key)] };
    assert.deepEqual(verifyNarInfo(info, [key.publicKey, PUBLIC_1]), ['cairn-1']);
  });

  it('throws INVALID_SIGNATURE on a malformed Sig', () => {
    const info = { ...NIX_WRITTEN, sigs: [SIG_1, 'garbage'] };
    assert.throws(
      () => verifyNarInfo(info, [PUBLIC_1]),
      (err) => isCairnError(err, 'INVALID_SIGNATURE') && /no colon \(7 characters\)/.test(err.message),
    );
  });
});
