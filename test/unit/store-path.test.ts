import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isCairnError } from '../../src/lib/cairn-error.ts';
import { isStorePath, parseStorePath, splitPackageName } from '../../src/nix/store-path.ts';

const HASH = 'r66mxzhcias4zcf5mfrdlgc05a5d3hrp';

describe('parseStorePath', () => {
  it('splits a valid store path into hash part and name', () => {
    const p = parseStorePath(`/nix/store/${HASH}-hello-2.12.1`);
    assert.equal(p.hashPart, HASH);
    assert.equal(p.name, 'hello-2.12.1');
  });

  it('accepts every character Nix allows in names', () => {
    assert.ok(isStorePath(`/nix/store/${HASH}-a+b-c.d_e?f=g`));
    assert.ok(isStorePath(`/nix/store/${HASH}-${'x'.repeat(211)}`));
  });

  it('rejects malformed paths with an error naming the fault', () => {
    const cases: Array<[string, RegExp]> = [
      [`/nix/storex/${HASH}-a`, /not under \/nix\/store\//],
      [`/nix/store/${HASH}-a/bin/sh`, /inside a store path/],
      ['/nix/store/short-a', /too short/],
      [`/nix/store/${HASH.replace('r', 'e')}-hello`, /hash part is not nix32/],
      [`/nix/store/${HASH}_hello`, /missing dash/],
      [`/nix/store/${HASH}-`, /too short|name is empty/],
      [`/nix/store/${HASH}-${'x'.repeat(212)}`, /longer than 211/],
      [`/nix/store/${HASH}-hello world`, /forbidden character " "/],
      [`/nix/store/${HASH}-caf\u00e9`, /forbidden character/],
      [`/nix/store/${HASH}-..`, /must not be '..'/],
      [`/nix/store/${HASH}-.-x`, /must not start with/],
      [`/nix/store/${HASH}-a\nb`, /forbidden character/],
    ];
    for (const [input, msg] of cases) {
      assert.throws(
        () => parseStorePath(input),
        (err) =>
          isCairnError(err, 'INVALID_STORE_PATH') && msg.test(err.message) && err.message.includes('('),
        input,
      );
    }
  });
});

describe('splitPackageName', () => {
  it('splits names the way nvd and parseDrvName do', () => {
    const cases: Array<[string, string, string]> = [
      ['python3-3.11.7', 'python3', '3.11.7'],
      ['linux-6.6.1-modules', 'linux', '6.6.1-modules'],
      ['hello-2.12.1', 'hello', '2.12.1'],
      ['nixos-system-web1-24.05.20240101.abcdef', 'nixos-system-web1', '24.05.20240101.abcdef'],
      ['etc', 'etc', ''],
      ['unit-script-nginx-start', 'unit-script-nginx-start', ''],
      ['glibc-2.38-44-bin', 'glibc', '2.38-44-bin'],
    ];
    for (const [name, pname, version] of cases) {
      assert.deepEqual(splitPackageName(name), { pname, version }, name);
    }
  });
});
