import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { agentSeriesText } from '../../src/server/metrics/agent-series.ts';

const agent = {
  name: 'web1',
  kind: 'nixos',
  system: 'x86_64-linux',
  version: '0.1.0',
  online: true,
  lastSeenAt: 1_700_000_000_500,
  deploymentState: 'succeeded',
  rebootRequired: true,
};

describe('agentSeriesText', () => {
  it('writes five series for an agent, under one HELP and TYPE per family', () => {
    const lines = agentSeriesText([agent]).split('\n');
    assert.deepEqual(
      lines.filter((l) => !l.startsWith('#')),
      [
        'cairn_agent_info{agent="web1",kind="nixos",system="x86_64-linux",version="0.1.0"} 1',
        'cairn_agent_connected{agent="web1"} 1',
        'cairn_agent_deployment_state{agent="web1",state="succeeded"} 1',
        'cairn_agent_reboot_required{agent="web1"} 1',
        'cairn_agent_last_seen_timestamp_seconds{agent="web1"} 1700000000.5',
        '',
      ],
    );
    assert.equal(lines.filter((l) => l.startsWith('# TYPE ')).length, 5);
  });

  it('leaves out the deployment state and last-seen series of an agent that has none, and writes empty labels', () => {
    const text = agentSeriesText([
      {
        ...agent,
        kind: null,
        system: null,
        version: null,
        online: false,
        lastSeenAt: null,
        deploymentState: null,
        rebootRequired: false,
      },
    ]);
    assert.match(text, /^cairn_agent_info\{agent="web1",kind="",system="",version=""\} 1$/m);
    assert.match(text, /^cairn_agent_connected\{agent="web1"\} 0$/m);
    assert.doesNotMatch(text, /^cairn_agent_(deployment_state|last_seen_timestamp_seconds)\{/m);
  });

  it('escapes backslashes, double quotes and newlines in label values, as the text format requires', () => {
    const text = agentSeriesText([{ ...agent, version: 'a"b\\c\nd' }]);
    assert.match(
      text,
      /^cairn_agent_info\{agent="web1",kind="nixos",system="x86_64-linux",version="a\\"b\\\\c\\nd"\} 1$/m,
    );
  });
});
