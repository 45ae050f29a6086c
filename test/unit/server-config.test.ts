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

describe('the webhook settings', () => {
  it('default to public addresses only, about a day of retries, 15 s, a 5 s poll and a 5 min grace', () => {
    const w = parseServerConfig({}, {}).webhooks;
    assert.equal(w.allowPrivate, false);
    // 5 s, 30 s, 2 m, 5 m, 15 m, 30 m, 1 h, 2 h, 4 h, 8 h, 8 h: 23 h 52 m 35 s in all.
    assert.equal(
      w.retryScheduleMs.reduce((a, b) => a + b, 0),
      ((23 * 60 + 52) * 60 + 35) * 1000,
    );
    assert.equal(w.retryScheduleMs.length, 11);
    assert.equal(w.timeoutMs, 15_000);
    assert.equal(w.pollMs, 5_000);
    assert.equal(w.agentOfflineGraceMs, 300_000);
  });

  it('takes them from the environment', () => {
    const w = parseServerConfig(
      {},
      {
        CAIRN_WEBHOOK_ALLOW_PRIVATE: '1',
        CAIRN_WEBHOOK_RETRY_SCHEDULE: '200ms, 1s,2m',
        CAIRN_WEBHOOK_TIMEOUT_SECONDS: '2',
        CAIRN_WEBHOOK_POLL_SECONDS: '0.5',
        CAIRN_AGENT_OFFLINE_GRACE_SECONDS: '60',
      },
    ).webhooks;
    assert.deepEqual(
      [w.allowPrivate, w.retryScheduleMs, w.timeoutMs, w.pollMs, w.agentOfflineGraceMs],
      [true, [200, 1000, 120_000], 2000, 500, 60_000],
    );
    assert.deepEqual(
      parseServerConfig({}, { CAIRN_WEBHOOK_RETRY_SCHEDULE: '' }).webhooks.retryScheduleMs,
      [],
    );
  });

  it('refuses bad values, all reported together and each named', () => {
    assert.throws(
      () =>
        parseServerConfig(
          {},
          {
            CAIRN_WEBHOOK_ALLOW_PRIVATE: 'yes',
            CAIRN_WEBHOOK_RETRY_SCHEDULE: '5s,forever',
            CAIRN_WEBHOOK_TIMEOUT_SECONDS: '120',
            CAIRN_AGENT_OFFLINE_GRACE_SECONDS: '-1',
          },
        ),
      (err: Error) =>
        err.message.includes('Cannot use CAIRN_WEBHOOK_ALLOW_PRIVATE: expected 0 or 1 (yes)') &&
        err.message.includes(
          'Cannot use CAIRN_WEBHOOK_RETRY_SCHEDULE: expected up to 30 comma-separated delays',
        ) &&
        err.message.includes('(5s,forever)') &&
        err.message.includes(
          'Cannot use CAIRN_WEBHOOK_TIMEOUT_SECONDS: expected a number of seconds from 0.1 to 60 (120)',
        ) &&
        err.message.includes('Cannot use CAIRN_AGENT_OFFLINE_GRACE_SECONDS'),
    );
    assert.throws(
      () => parseServerConfig({}, { CAIRN_WEBHOOK_RETRY_SCHEDULE: '2d' }),
      /CAIRN_WEBHOOK_RETRY_SCHEDULE: expected up to 30 comma-separated delays of at most 1d/,
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
