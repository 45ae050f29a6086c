import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { compileNamePattern } from '../../src/protocol/enrol-schemas.ts';

describe('compileNamePattern', () => {
  const matches = (pattern: string, name: string) => {
    const re = compileNamePattern(pattern);
    assert.ok(!('error' in re), `${pattern}: ${'error' in re ? re.error : ''}`);
    return re.test(name);
  };

  it('matches whole names only', () => {
    assert.equal(matches('web-[0-9]+', 'web-12'), true);
    assert.equal(matches('web-[0-9]+', 'xweb-12'), false);
    assert.equal(matches('web-[0-9]+', 'web-12x'), false);
    // An alternation is still anchored as a whole.
    assert.equal(matches('web|db', 'webdb'), false);
    assert.equal(matches('web|db', 'db'), true);
  });

  it('refuses an invalid expression, saying why', () => {
    const re = compileNamePattern('web-(');
    assert.ok('error' in re);
    assert.match(re.error, /not a valid regular expression/);
  });

  it('refuses a pattern longer than 200 characters', () => {
    assert.ok('error' in compileNamePattern('a'.repeat(201)));
    assert.ok(!('error' in compileNamePattern('a'.repeat(200))));
  });

  it('refuses a repeated group that itself repeats, which could hang the server', () => {
    for (const p of ['(a+)+', '(a|b*){2,}', '(?:x*)*', '([a-z]+)*-1']) {
      const re = compileNamePattern(p);
      assert.ok('error' in re, p);
      assert.match(re.error, /exponential/);
    }
    // Repetition inside a group, or of a group without one, is fine.
    for (const p of ['(web|db)-[0-9]+', '(ab)+', 'web-([0-9]{1,3})'])
      assert.ok(!('error' in compileNamePattern(p)), p);
  });
});
