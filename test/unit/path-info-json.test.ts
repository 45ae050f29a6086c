import assert from 'node:assert/strict';
import { chmod, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { readClosure } from '../../src/agent/read-closure.ts';
import { isCairnError } from '../../src/lib/cairn-error.ts';
import { parsePathInfoJson } from '../../src/nix/path-info-json.ts';

/**
 * `nix path-info --json --recursive` of a hello closure as Nix 2.19 and later print it: one
 * object keyed by store path, hashes in SRI form. Nix 2.8 (the one the rest of the suite runs)
 * prints an array, so this format is only reached through a recorded sample; see
 * test/testdata/README.md for how it was written.
 */
const SAMPLE = fileURLToPath(new URL('../testdata/path-info-nix-2.19.json', import.meta.url));

const S = '/nix/store/';
const HELLO = `${S}7p84w3wpyjspsnr05rclf2gwmyhvzj4n-hello-2.12.1`;
const GLIBC = `${S}3lvmspl2rdmfl00l1gj2y5pnb1qc2jxs-glibc-2.39-52`;
const LIBIDN2 = `${S}f6l97s80j2snh9cgk2jjn69ip1adym8v-libidn2-2.3.7`;
const LIBUNISTRING = `${S}hb0j7pc12jmn4nb0gci36cj83iq9pgva-libunistring-1.2`;
const LIBGCC = `${S}bp79fx9pscczxsyc0r3vrk343dqblaf7-xgcc-13.3.0-libgcc`;

/** The closure, read off the sample by hand: path, NAR size and references of each. */
const EXPECTED = [
  { path: GLIBC, narSize: 30108952, references: [GLIBC, LIBGCC, LIBIDN2] },
  { path: HELLO, narSize: 226560, references: [GLIBC] },
  { path: LIBGCC, narSize: 201016, references: [] },
  { path: LIBIDN2, narSize: 364208, references: [LIBIDN2, LIBUNISTRING] },
  { path: LIBUNISTRING, narSize: 1848576, references: [LIBUNISTRING] },
];

describe('parsePathInfoJson on the object format of Nix 2.19 and later', () => {
  it('reads every path of the closure with its NAR size and full-path references', async () => {
    const infos = parsePathInfoJson(await readFile(SAMPLE, 'utf8'));
    assert.deepEqual(
      infos.map((i) => ({ path: i.path, narSize: i.narSize, references: [...i.references] })),
      EXPECTED,
    );
  });

  it('reads the SRI narHash, the deriver and the signatures of a path', async () => {
    const hello = parsePathInfoJson(await readFile(SAMPLE, 'utf8')).find((i) => i.path === HELLO);
    assert.equal(hello?.narHash.algorithm, 'sha256');
    assert.equal(
      Buffer.from(hello.narHash.digest).toString('base64'),
      'g+LH7GtWUEXxBeYYjLwBO2+pQRlZ24AwJYszp2gL2Xo=',
    );
    assert.equal(hello.deriver, `${S}pvkkmiyafgzp75v2xayhvsh2wv2xp8pz-hello-2.12.1.drv`);
    assert.deepEqual(hello.signatures, [
      'cache.nixos.org-1:ucXG1SJ+wpEP6W2cP/Ak7MSvnXr/bc4X9QgosQU5BpiXRnscQy7CwmG38UXl63o+UtQEuzkBsrjUaTaGzS+sGw==',
    ]);
    // `"ca": null` (printed since Nix 2.23) is an input-addressed path: no ca.
    assert.equal('ca' in hello, false);
  });

  it('refuses a path Nix reports as invalid (null), naming it', () => {
    const missing = `${S}${'a'.repeat(32)}-missing`;
    assert.throws(
      () => parsePathInfoJson(JSON.stringify({ [HELLO]: null, [missing]: null })),
      (err) => isCairnError(err, 'INVALID_ARGUMENT') && err.message.includes(HELLO),
    );
  });
});

describe('readClosure when nix prints the object format', () => {
  it("gives the agent the closure's sizes and references as the sample has them", async () => {
    // A `nix` that prints the sample, as Nix 2.19 and later would for `path-info --json -r`.
    const bin = await mkdtemp(join(tmpdir(), 'cairn-fake-nix-'));
    try {
      await writeFile(join(bin, 'nix'), `#!/bin/sh\nexec cat '${SAMPLE}'\n`);
      await chmod(join(bin, 'nix'), 0o755);
      const closure = await readClosure({ ...process.env, PATH: `${bin}:${process.env.PATH}` }, HELLO);
      assert.deepEqual(closure, EXPECTED);
    } finally {
      await rm(bin, { recursive: true, force: true });
    }
  });
});
