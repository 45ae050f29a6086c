import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { after, before, describe, it } from 'node:test';
import { encodeNarString } from '../../src/nix/nar-format.ts';
import { bearer, createTestCache, nixSha256, rawRequest, type TestCache } from '../helpers/binary-cache.ts';
import { startTestServer, type TestServer } from '../helpers/server.ts';

const GiB = 1024 ** 3;

/**
 * A well-formed NAR of one regular file of `size` zero bytes, compressed with the real `zstd`
 * as it streams: a few hundred KB that expand to `size` bytes.
 */
async function zstdBomb(size: number): Promise<Buffer> {
  const zstd = spawn('zstd', ['-c', '-q', '-3'], { stdio: ['pipe', 'pipe', 'inherit'] });
  const out: Buffer[] = [];
  zstd.stdout.on('data', (d: Buffer) => out.push(d));
  const closed = new Promise((resolve) => zstd.on('close', resolve));
  const write = async (b: Buffer) => {
    if (!zstd.stdin.write(b)) await new Promise((r) => zstd.stdin.once('drain', r));
  };
  const length = Buffer.alloc(8);
  length.writeBigUInt64LE(BigInt(size));
  for (const s of ['nix-archive-1', '(', 'type', 'regular', 'contents']) await write(encodeNarString(s));
  await write(length);
  const zeros = Buffer.alloc(16 * 1024 * 1024);
  for (let left = size; left > 0; left -= zeros.length)
    await write(zeros.subarray(0, Math.min(left, zeros.length)));
  await write(encodeNarString(')'));
  zstd.stdin.end();
  await closed;
  return Buffer.concat(out);
}

/**
 * Issue #23, finding 6: a 145 KB `.nar.zst` expanding to 4 GiB was decompressed and parsed whole
 * (8.5 s of CPU) before being accepted. The upload must be refused as soon as the output passes
 * what the file may expand to, with the decompressor killed.
 */
describe('compression bombs', () => {
  let server: TestServer;
  let cache: TestCache;
  let bomb: Buffer;
  before(async () => {
    server = await startTestServer();
    cache = await createTestCache(server, 'main');
    bomb = await zstdBomb(4 * GiB);
  });
  after(() => server.stop());

  it('refuses a small .nar.zst that expands to 4 GiB with 413, before decompressing it', async (t) => {
    assert.ok(bomb.length < 1024 * 1024, `the bomb is ${bomb.length} bytes`);
    // The server runs in this process: its CPU time is this process's (the zstd child's is not,
    // and it is killed).
    const cpu = process.cpuUsage();
    const started = Date.now();
    const res = await rawRequest(`${cache.url}/nar/${nixSha256(bomb).slice(7)}.nar.zst`, {
      method: 'PUT',
      headers: bearer(cache.pushToken),
      body: bomb,
    });
    const used = process.cpuUsage(cpu);
    t.diagnostic(
      `${bomb.length}-byte bomb refused after ${Date.now() - started} ms, ${((used.user + used.system) / 1000).toFixed(0)} ms of CPU`,
    );
    assert.equal(res.status, 413, res.body);
    const error = JSON.parse(res.body) as { code: string; message: string };
    assert.equal(error.code, 'TOO_LARGE');
    assert.match(error.message, /decompresses to more than \d+ bytes from \d+/);
    // Nothing was kept: the same name is still unknown.
    const get = await rawRequest(`${cache.url}/nar/${nixSha256(bomb).slice(7)}.nar.zst`, {
      headers: bearer(cache.pushToken),
    });
    assert.equal(get.status, 404);
  });

  it('still accepts a compressed NAR that expands a lot but within the bound', async () => {
    // 32 MiB of zeros: about 1,000 bytes compressed, within the 64 MiB slack.
    const small = await zstdBomb(32 * 1024 * 1024);
    const res = await rawRequest(`${cache.url}/nar/${nixSha256(small).slice(7)}.nar.zst`, {
      method: 'PUT',
      headers: bearer(cache.pushToken),
      body: small,
    });
    assert.equal(res.status, 201, res.body);
  });
});
