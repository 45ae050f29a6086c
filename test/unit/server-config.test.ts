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

describe('the metrics settings', () => {
  it('have no metrics address and no per-agent series by default', () => {
    const c = parseServerConfig({}, {});
    assert.equal(c.metricsListen, undefined);
    assert.equal(c.metricsPerAgent, false);
  });

  it('take the metrics address from --metrics-listen, else CAIRN_METRICS_LISTEN', () => {
    assert.deepEqual(parseServerConfig({ metricsListen: '127.0.0.1:9464' }, {}).metricsListen, {
      host: '127.0.0.1',
      port: 9464,
    });
    assert.deepEqual(parseServerConfig({}, { CAIRN_METRICS_LISTEN: '[::1]:9464' }).metricsListen, {
      host: '::1',
      port: 9464,
    });
    assert.deepEqual(
      parseServerConfig({ metricsListen: ':9000' }, { CAIRN_METRICS_LISTEN: '0.0.0.0:1' }).metricsListen,
      { host: '127.0.0.1', port: 9000 },
    );
  });

  it('refuses a metrics address that is not HOST:PORT, naming the flag', () => {
    for (const bad of ['9464', 'host:', 'host:99999', 'a:b:c'])
      assert.throws(
        () => parseServerConfig({ metricsListen: bad }, {}),
        (err: Error & { code?: string }) =>
          err.code === 'INVALID_ARGUMENT' &&
          err.message === `Cannot use --metrics-listen: expected HOST:PORT (${bad})`,
        bad,
      );
  });

  it('turns per-agent series on with --metrics-per-agent or CAIRN_METRICS_PER_AGENT=1, and refuses other values', () => {
    assert.equal(parseServerConfig({ metricsPerAgent: true }, {}).metricsPerAgent, true);
    assert.equal(parseServerConfig({}, { CAIRN_METRICS_PER_AGENT: '1' }).metricsPerAgent, true);
    assert.equal(parseServerConfig({}, { CAIRN_METRICS_PER_AGENT: 'false' }).metricsPerAgent, false);
    assert.throws(
      () => parseServerConfig({}, { CAIRN_METRICS_PER_AGENT: 'sure' }),
      /Cannot use CAIRN_METRICS_PER_AGENT: expected 1 or 0 \(true or false\) \(sure\)/,
    );
  });
});
