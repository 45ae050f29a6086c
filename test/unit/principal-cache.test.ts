import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Principal } from '../../src/server/auth/principal.ts';
import { PrincipalCache } from '../../src/server/auth/principal-cache.ts';

const principal = (tokenId: string): Principal => ({
  tokenId,
  tokenName: `token ${tokenId}`,
  workspaceId: 1,
  scopes: [{ kind: 'cache', cache: 'main', access: 'pull' }],
});

describe('PrincipalCache', () => {
  it('get returns a remembered token until the TTL ends', () => {
    const cache = new PrincipalCache({ ttlMs: 5000 });
    cache.set('h1', { principal: principal('t1'), expiresAt: null }, 1000, cache.mark());
    assert.equal(cache.get('h1', 5999)?.tokenId, 't1');
    assert.equal(cache.get('h1', 6000), undefined);
  });

  it('get refuses a remembered token from its own expiry on, before the TTL ends', () => {
    const cache = new PrincipalCache({ ttlMs: 5000 });
    cache.set('h1', { principal: principal('t1'), expiresAt: 2000 }, 1000, cache.mark());
    assert.equal(cache.get('h1', 1999)?.tokenId, 't1');
    assert.equal(cache.get('h1', 2000), undefined);
  });

  it('forget drops the token at once', () => {
    const cache = new PrincipalCache();
    cache.set('h1', { principal: principal('t1'), expiresAt: null }, 1000, cache.mark());
    cache.set('h2', { principal: principal('t2'), expiresAt: null }, 1000, cache.mark());
    cache.forget('t1');
    assert.equal(cache.get('h1', 1001), undefined);
    assert.equal(cache.get('h2', 1001)?.tokenId, 't2');
  });

  it('set remembers nothing when a token was revoked while it was looked up', () => {
    const cache = new PrincipalCache();
    const mark = cache.mark();
    cache.forget('t1'); // the revocation lands between the query and its answer
    cache.set('h1', { principal: principal('t1'), expiresAt: null }, 1000, mark);
    assert.equal(cache.get('h1', 1001), undefined);
  });

  it('set forgets the token remembered longest ago beyond maxEntries', () => {
    const cache = new PrincipalCache({ maxEntries: 2 });
    for (const n of [1, 2, 3]) {
      cache.set(`h${n}`, { principal: principal(`t${n}`), expiresAt: null }, 1000, cache.mark());
    }
    assert.equal(cache.get('h1', 1001), undefined);
    assert.equal(cache.get('h2', 1001)?.tokenId, 't2');
    assert.equal(cache.get('h3', 1001)?.tokenId, 't3');
  });
});
