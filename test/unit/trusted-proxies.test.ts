import assert from 'node:assert/strict';
import type { IncomingMessage } from 'node:http';
import { describe, it } from 'node:test';
import { parseTrustedProxies, TrustedProxies } from '../../src/server/http/trusted-proxies.ts';
import { parseServerConfig } from '../../src/server/server-config.ts';

/** What clientOf reads of a request: its peer and its X-Forwarded-For. */
const req = (peer: string, forwardedFor?: string | string[]) =>
  ({
    socket: { remoteAddress: peer },
    headers: forwardedFor === undefined ? {} : { 'x-forwarded-for': forwardedFor },
  }) as unknown as IncomingMessage;

describe('TrustedProxies.clientOf', () => {
  const proxies = new TrustedProxies(['10.0.0.5', '10.1.0.0/16', 'fd00::/8']);

  it('takes the right-most entry of X-Forwarded-For that is not a trusted proxy', () => {
    assert.equal(proxies.clientOf(req('10.0.0.5', '203.0.113.7')), '203.0.113.7');
    // The client's own entries (left of what our proxies appended) prove nothing.
    assert.equal(proxies.clientOf(req('10.0.0.5', '1.2.3.4, 203.0.113.7, 10.1.2.3')), '203.0.113.7');
    // Several headers are one list.
    assert.equal(proxies.clientOf(req('10.0.0.5', ['1.2.3.4', '198.51.100.9'])), '198.51.100.9');
    assert.equal(proxies.clientOf(req('fd00::1', '2001:db8::1')), '2001:db8::1');
  });

  it('believes no header from a peer that is not a trusted proxy, nor when none is set', () => {
    assert.equal(proxies.clientOf(req('203.0.113.7', '10.0.0.9')), '203.0.113.7');
    assert.equal(new TrustedProxies([]).clientOf(req('10.0.0.5', '203.0.113.7')), '10.0.0.5');
  });

  it('sees an IPv4 peer of an IPv6 socket as the IPv4 address', () => {
    assert.equal(proxies.clientOf(req('::ffff:10.0.0.5', '203.0.113.7')), '203.0.113.7');
    assert.equal(proxies.clientOf(req('::ffff:203.0.113.7')), '203.0.113.7');
  });

  it('keeps the proxy’s address without a header, with a malformed entry, and the left-most when all are proxies', () => {
    assert.equal(proxies.clientOf(req('10.0.0.5')), '10.0.0.5');
    assert.equal(proxies.clientOf(req('10.0.0.5', 'not-an-address')), '10.0.0.5');
    assert.equal(proxies.clientOf(req('10.0.0.5', 'garbage, 10.1.0.1')), '10.1.0.1');
    assert.equal(proxies.clientOf(req('10.0.0.5', '10.1.9.9, 10.1.0.1')), '10.1.9.9');
  });
});

describe('parseTrustedProxies', () => {
  it('takes addresses and networks, comma-separated', () => {
    assert.deepEqual(parseTrustedProxies('10.0.0.5, ::1,10.0.0.0/8,fd00::/8'), {
      entries: ['10.0.0.5', '::1', '10.0.0.0/8', 'fd00::/8'],
    });
  });

  it('names each value that is not an address or network', () => {
    for (const bad of ['nginx.local', '10.0.0.256', '10.0.0.0/33', '::1/129', '10.0.0.0/', '*']) {
      const r = parseTrustedProxies(`127.0.0.1,${bad}`);
      assert.ok('problems' in r, bad);
      assert.deepEqual(r.problems, [
        `Cannot use --trusted-proxy: expected an IPv4 or IPv6 address, or ADDRESS/PREFIX-LENGTH (${bad})`,
      ]);
    }
    assert.ok('problems' in parseTrustedProxies(' , '));
  });

  it('is read from --trusted-proxy or CAIRN_TRUSTED_PROXY, and refused at start when wrong', () => {
    assert.deepEqual(parseServerConfig({}, {}).trustedProxies, []);
    assert.deepEqual(parseServerConfig({}, { CAIRN_TRUSTED_PROXY: '10.0.0.5' }).trustedProxies, ['10.0.0.5']);
    assert.deepEqual(
      parseServerConfig({ trustedProxy: '::1' }, { CAIRN_TRUSTED_PROXY: '10.0.0.5' }).trustedProxies,
      ['::1'],
    );
    assert.throws(
      () => parseServerConfig({}, { CAIRN_TRUSTED_PROXY: 'lb.example' }),
      (err: Error & { code?: string }) =>
        err.code === 'INVALID_ARGUMENT' && /\(lb\.example\)/.test(err.message),
    );
  });
});
