import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Selectable } from 'kysely';
import { DesiredLookup } from '../../src/server/agents/desired-lookup.ts';
import type { DeploymentsTable } from '../../src/server/db/database-schema.ts';

type Row = Selectable<DeploymentsTable>;

/** The one query DesiredLookup needs, answering from a table and counting its calls. */
function deploymentsWith(rows: Map<number, Row>) {
  const calls: number[][] = [];
  return {
    calls,
    desiredForMany: async (ids: readonly number[]) => {
      calls.push([...ids]);
      return new Map([...rows].filter(([id]) => ids.includes(id)));
    },
  };
}

describe('DesiredLookup', () => {
  it('looks up every agent asking in the same turn with one query', async () => {
    const row = { id: 7 } as Row;
    const deployments = deploymentsWith(new Map([[1, row]]));
    const lookup = new DesiredLookup(deployments);
    const answers = await Promise.all([lookup.of(1), lookup.of(2), lookup.of(1)]);
    assert.deepEqual(answers, [row, undefined, row]);
    assert.deepEqual(deployments.calls, [[1, 2]]);
    await lookup.of(2);
    assert.equal(deployments.calls.length, 2, 'a later turn makes a new query');
  });

  it('a failed query fails every waiting agent, not only the first', { timeout: 5000 }, async () => {
    const lookup = new DesiredLookup({
      desiredForMany: async () => {
        throw new Error('database gone');
      },
    });
    const results = await Promise.allSettled([lookup.of(1), lookup.of(2), lookup.of(2)]);
    assert.deepEqual(
      results.map((r) => r.status),
      ['rejected', 'rejected', 'rejected'],
    );
  });
});
