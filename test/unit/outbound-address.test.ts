import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ipLiteral, privateRange } from '../../src/server/webhooks/outbound-address.ts';

describe('privateRange', () => {
  it('names loopback addresses, IPv4 and IPv6, also written as IPv4-mapped IPv6', () => {
    for (const a of [
      '127.0.0.1',
      '127.255.255.254',
      '::1',
      '::ffff:127.0.0.1',
      '::FFFF:127.0.0.2',
      '::ffff:7f00:1',
      '0:0:0:0:0:ffff:7f00:1',
      '0::1',
      '64:ff9b::7f00:1',
      '2002:7f00:1::',
    ])
      assert.equal(privateRange(a), 'loopback', a);
  });

  it('refuses the private, link-local, shared, multicast, unspecified and reserved ranges', () => {
    for (const a of [
      '10.0.0.1',
      '172.16.0.1',
      '172.31.255.255',
      '192.168.1.1',
      '169.254.169.254',
      '100.64.0.1',
      '0.0.0.0',
      '224.0.0.1',
      '255.255.255.255',
      '198.18.0.1',
      'fc00::1',
      'fd12:3456::1',
      'fe80::1',
      'ff02::1',
      '::',
      '::ffff:10.1.2.3',
      '::ffff:a9fe:a9fe',
      '::7f00:1',
      '::10.0.0.1',
      '64:ff9b::a00:1',
      '2002:c0a8:101::1',
    ])
      assert.equal(privateRange(a), 'private or reserved', a);
  });

  it('lets public addresses through, including the neighbours of the ranges', () => {
    for (const a of [
      '8.8.8.8',
      '1.1.1.1',
      '172.15.255.255',
      '172.32.0.1',
      '100.128.0.1',
      '192.169.0.1',
      '2001:4860:4860::8888',
      '::ffff:8.8.8.8',
    ])
      assert.equal(privateRange(a), undefined, a);
  });

  it('says so of what is not an address', () => {
    assert.equal(privateRange('localhost'), 'not an IP address');
  });
});

describe('ipLiteral', () => {
  it('gives the host of a URL that names an address, without brackets, and nothing for a name', () => {
    assert.equal(ipLiteral(new URL('http://127.0.0.1:8080/x')), '127.0.0.1');
    assert.equal(ipLiteral(new URL('https://[::1]/x')), '::1');
    assert.equal(ipLiteral(new URL('https://[::ffff:7f00:1]/x')), '::ffff:7f00:1');
    assert.equal(ipLiteral(new URL('https://hooks.example.com/x')), undefined);
  });
});
