import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isCairnError } from '../../src/lib/cairn-error.ts';
import { parseNarInfo, serializeNarInfo } from '../../src/nix/narinfo.ts';
import { formatNixHash, formatSriHash, parseNixHash } from '../../src/nix/nix-hash.ts';

const A = 'ca326ks7frq1n79h5d3i7bcqpy4ldr77-exp-a';
const B = 'jbhzf171gy1z00iwvh4f726gw1s15zqf-exp-b';
const NAR_HASH = 'sha256:10jid5hgi74jn835iw1b01y57b29dkki2mshs0a30n8rhbllqmpv';
const FILE_HASH = 'sha256:0jmfi6a9ycnwmxj7x60pfp382k8gdw0djr1l0kdhwvamn3hjgzfl';
const SIG1 =
  'test-1:Kab8SXAsA1vG+iGsEZmSwFIxmluSN8IokJlSiAhvZJd3QUUpRKIEMUAYvgibFid6HIqXbNvZMCK6/VdE3a78CQ==';
const SIG2 =
  'test-2:jQ6YPlhoWLx0NlJE5oDUpzGfLbSlAlwhhq4kLhCLdx19/WxV6sXOEGWDtx0NTijIH+hPcOGiVDIAas/2DRawAg==';

/** Every field Nix writes, in Nix's order (as `nix copy` wrote it, plus System and CA). */
const FULL = [
  `StorePath: /nix/store/${B}`,
  'URL: nar/0jmfi6a9ycnwmxj7x60pfp382k8gdw0djr1l0kdhwvamn3hjgzfl.nar.xz',
  'Compression: xz',
  `FileHash: ${FILE_HASH}`,
  'FileSize: 176',
  `NarHash: ${NAR_HASH}`,
  'NarSize: 168',
  `References: ${A} ${B}`,
  'Deriver: gv9clc4rimxlvy5jp3gjnnw6nf5m68l6-exp-b.drv',
  'System: x86_64-linux',
  `Sig: ${SIG1}`,
  `Sig: ${SIG2}`,
  'CA: fixed:r:sha256:0bi50x8yin0g4hmh83ipfpdyvhqk04ndsdw8hg678300vwjsh1f2',
  '',
].join('\n');

const MINIMAL = `StorePath: /nix/store/${A}\nURL: nar/x.nar\nNarHash: ${NAR_HASH}\nNarSize: 120\n`;

/** `FULL` with line `n` (1-based) replaced, or removed when `line` is undefined. */
function withLine(n: number, line: string | undefined): string {
  const lines = FULL.split('\n');
  lines.splice(n - 1, 1, ...(line === undefined ? [] : [line]));
  return lines.join('\n');
}

describe('parseNarInfo', () => {
  it('reads every field Nix writes', () => {
    const info = parseNarInfo(FULL);
    assert.equal(info.storePath, `/nix/store/${B}`);
    assert.equal(info.url, 'nar/0jmfi6a9ycnwmxj7x60pfp382k8gdw0djr1l0kdhwvamn3hjgzfl.nar.xz');
    assert.equal(info.compression, 'xz');
    assert.equal(formatNixHash(info.fileHash!), FILE_HASH);
    assert.equal(info.fileSize, 176);
    assert.equal(formatNixHash(info.narHash), NAR_HASH);
    assert.equal(info.narSize, 168);
    assert.deepEqual(info.references, [A, B]);
    assert.equal(info.deriver, 'gv9clc4rimxlvy5jp3gjnnw6nf5m68l6-exp-b.drv');
    assert.equal(info.system, 'x86_64-linux');
    assert.deepEqual(info.sigs, [SIG1, SIG2]);
    assert.equal(info.ca, 'fixed:r:sha256:0bi50x8yin0g4hmh83ipfpdyvhqk04ndsdw8hg678300vwjsh1f2');
    assert.deepEqual(info.unknownFields, []);
  });

  it('tells an absent References line from an empty one', () => {
    const absent = parseNarInfo(MINIMAL);
    assert.equal(absent.references, undefined);
    assert.equal(absent.compression, undefined);
    assert.equal(absent.deriver, undefined);
    assert.deepEqual(absent.sigs, []);
    assert.deepEqual(parseNarInfo(`${MINIMAL}References: \n`).references, []);
  });

  it('reads Deriver: unknown-deriver as no deriver', () => {
    assert.equal(parseNarInfo(withLine(9, 'Deriver: unknown-deriver')).deriver, undefined);
  });

  it('reads hashes in any form Nix accepts', () => {
    const sri = formatSriHash(parseNixHash(NAR_HASH));
    assert.equal(formatNixHash(parseNarInfo(withLine(6, `NarHash: ${sri}`)).narHash), NAR_HASH);
  });

  it('keeps unknown fields in order and writes them back after the known ones', () => {
    const text = `${FULL}Future-Field: some value\nOther: \nconstructor: x\ntoString: y\n`;
    const info = parseNarInfo(text);
    assert.deepEqual(info.unknownFields, [
      { key: 'Future-Field', value: 'some value' },
      { key: 'Other', value: '' },
      { key: 'constructor', value: 'x' },
      { key: 'toString', value: 'y' },
    ]);
    assert.equal(serializeNarInfo(info), text);
  });

  it('rejects malformed narinfo files naming the line and the fault', () => {
    const cases: Array<[string, string, RegExp]> = [
      [
        'bad NarSize',
        withLine(7, 'NarSize: abc'),
        /line 7: NarSize is not a non-negative integer \(NarSize: abc\)/,
      ],
      ['negative size', withLine(5, 'FileSize: -1'), /line 5: FileSize is not a non-negative integer/],
      ['leading zero', withLine(7, 'NarSize: 0168'), /line 7: NarSize is not a non-negative integer/],
      ['unsafe size', withLine(7, 'NarSize: 9007199254740993'), /line 7: NarSize is not a non-negative/],
      ['zero NarSize', withLine(7, 'NarSize: 0'), /line 7: NarSize must not be 0/],
      [
        'bad store path',
        withLine(1, 'StorePath: /nix/stor/x'),
        /line 1: StorePath is not a valid store path: not under/,
      ],
      ['file in store path', withLine(1, `StorePath: /nix/store/${B}/bin`), /line 1: .*inside a store path/],
      [
        'bad reference',
        withLine(8, `References: ${A} nope`),
        /line 8: reference 2 is not a valid .*too short .*\(nope\)$/,
      ],
      ['double space', withLine(8, `References: ${A}  ${B}`), /line 8: reference 2 is not a valid/],
      ['duplicate reference', withLine(8, `References: ${A} ${A}`), /line 8: reference 2 is a duplicate/],
      [
        'bad NarHash',
        withLine(6, 'NarHash: sha256:xyz'),
        /line 6: NarHash is not a valid hash: .*wrong length/,
      ],
      ['md5 NarHash', withLine(6, `NarHash: md5:${'0'.repeat(32)}`), /line 6: NarHash is not a sha256 hash/],
      ['bad FileHash', withLine(4, 'FileHash: sha3:abc'), /line 4: FileHash .*unsupported algorithm 'sha3'/],
      ['bad Deriver', withLine(9, 'Deriver: x.drv'), /line 9: Deriver is not a valid store path base name/],
      ['Deriver not .drv', withLine(9, `Deriver: ${A}`), /line 9: Deriver does not end in .drv/],
      ['bad CA', withLine(13, 'CA: sha256:abc'), /line 13: CA is not 'text:<hash>'/],
      ['bad CA hash', withLine(13, 'CA: fixed:sha256:abc'), /line 13: CA has an invalid hash/],
      ['duplicate field', withLine(3, 'URL: nar/y.nar'), /line 3: duplicate URL field \(first on line 2\)/],
      ['duplicate Sig', withLine(12, `Sig: ${SIG1}`), /line 12: duplicate signature/],
      ['empty URL', withLine(2, 'URL: '), /line 2: URL is empty/],
      ['empty Sig', withLine(11, 'Sig: '), /line 11: Sig is empty/],
      ['no separator', withLine(10, 'System:x86_64-linux'), /line 10: expected '<Key>: <value>'/],
      ['not a field', withLine(10, 'hello'), /line 10: expected '<Key>: <value>' \(hello\)/],
      ['empty line', withLine(10, ''), /line 10: empty line/],
      ['CRLF', FULL.replaceAll('\n', '\r\n'), /line 1: control character U\+000D/],
      ['no final newline', FULL.slice(0, -1), /line 13: the last line does not end with a newline/],
      ['missing NarHash', withLine(6, undefined), /missing required field NarHash \(\/nix\/store\//],
      ['missing several', 'URL: x\n', /missing required fields StorePath, NarHash, NarSize/],
      ['empty file', '', /missing required fields StorePath, URL, NarHash, NarSize/],
    ];
    for (const [label, text, msg] of cases) {
      assert.throws(
        () => parseNarInfo(text),
        (err) => {
          assert.ok(isCairnError(err, 'INVALID_NARINFO'), label);
          assert.match(err.message, /^Cannot parse narinfo: /, label);
          assert.match(err.message, msg, label);
          return true;
        },
        label,
      );
    }
  });

  it('shortens a huge line in its error message', () => {
    assert.throws(
      () => parseNarInfo(withLine(8, `References${' x'.repeat(100_000)}`)),
      (err) =>
        isCairnError(err, 'INVALID_NARINFO') &&
        /^Cannot parse narinfo: line 8: .{0,300}\.\.\.\)$/.test(err.message),
    );
  });
});

describe('serializeNarInfo', () => {
  it('writes every field back byte for byte, in Nix order', () => {
    assert.equal(serializeNarInfo(parseNarInfo(FULL)), FULL);
    assert.equal(serializeNarInfo(parseNarInfo(MINIMAL)), MINIMAL);
  });

  it('round-trips parse(serialize(x))', () => {
    for (const text of [FULL, MINIMAL, `${MINIMAL}References: \n`]) {
      const info = parseNarInfo(text);
      assert.deepEqual(parseNarInfo(serializeNarInfo(info)), info);
    }
  });

  it('writes fields in Nix order whatever order they were read in', () => {
    const shuffled = FULL.split('\n').slice(0, -1).reverse().join('\n');
    const out = serializeNarInfo(parseNarInfo(`${shuffled}\n`));
    assert.equal(out, FULL.replace(`Sig: ${SIG1}\nSig: ${SIG2}`, `Sig: ${SIG2}\nSig: ${SIG1}`));
  });

  it('writes hashes as sha256:<nix32> and omits Deriver when there is none', () => {
    const sri = formatSriHash(parseNixHash(NAR_HASH));
    const text = withLine(9, 'Deriver: unknown-deriver').replace(NAR_HASH, sri);
    assert.equal(serializeNarInfo(parseNarInfo(text)), withLine(9, undefined));
  });

  it('refuses a value that would inject a line', () => {
    const info = { ...parseNarInfo(MINIMAL), system: 'x86_64-linux\nSig: evil:AAAA' };
    assert.throws(
      () => serializeNarInfo(info),
      (err) =>
        isCairnError(err, 'INVALID_NARINFO') && /System contains a control character/.test(err.message),
    );
  });
});
