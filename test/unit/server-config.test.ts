import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseServerConfig } from '../../src/server/server-config.ts';

describe('the events backstop setting', () => {
  it('defaults to 30 s and takes seconds from CAIRN_EVENTS_BACKSTOP_SECONDS', () => {
    assert.equal(parseServerConfig({}, {}).eventsBackstopMs, 30_000);
    assert.equal(parseServerConfig({}, { CAIRN_EVENTS_BACKSTOP_SECONDS: '2.5' }).eventsBackstopMs, 2500);
  });

  it('refuses what is not a number of seconds from 0.1 to 3600, saying which', () => {
    for (const bad of ['', 'abc', '-1', '0', '0.01', '3601', '1e3', '30s'])
      assert.throws(
        () => parseServerConfig({}, { CAIRN_EVENTS_BACKSTOP_SECONDS: bad }),
        (err: Error) =>
          err.message.includes('Cannot use CAIRN_EVENTS_BACKSTOP_SECONDS: expected a number of seconds') &&
          err.message.includes(`(${bad})`),
        bad,
      );
  });
});

describe('the replica lease setting', () => {
  it('defaults to 60 s and takes seconds from CAIRN_REPLICA_LEASE_SECONDS', () => {
    assert.equal(parseServerConfig({}, {}).replicaLeaseMs, 60_000);
    assert.equal(parseServerConfig({}, { CAIRN_REPLICA_LEASE_SECONDS: '2.5' }).replicaLeaseMs, 2500);
  });

  it('refuses what is not a number of seconds from 1 to 3600, saying which', () => {
    for (const bad of ['', 'abc', '-1', '0', '0.5', '3601', '1e3', '20s'])
      assert.throws(
        () => parseServerConfig({}, { CAIRN_REPLICA_LEASE_SECONDS: bad }),
        (err: Error) =>
          err.message.includes('Cannot use CAIRN_REPLICA_LEASE_SECONDS: expected a number of seconds') &&
          err.message.includes(`(${bad})`),
        bad,
      );
  });
});
