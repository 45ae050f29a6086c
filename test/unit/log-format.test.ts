import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import pino from 'pino';
import { prettyLogLine } from '../../src/server/log-format.ts';

/** What pino itself writes for these calls, as readable lines. */
function logged(write: (log: pino.Logger) => void): string {
  let out = '';
  const log = pino({ level: 'info' }, { write: (line: string) => (out += prettyLogLine(line)) });
  write(log);
  return out;
}

describe('readable log lines (the server on a terminal)', () => {
  it('shows time, level, message and fields, quoting only values that need it', () => {
    const out = logged((log) =>
      log.info(
        { url: 'http://127.0.0.1:8080', dataDir: '/var/lib/my cairn', applied: [12, 13] },
        'cairn server listening',
      ),
    );
    assert.match(
      out,
      /^\d\d:\d\d:\d\d INFO {2}cairn server listening url=http:\/\/127\.0\.0\.1:8080 dataDir="\/var\/lib\/my cairn" applied=\[12,13\]\n$/,
    );
    assert.doesNotMatch(out, /pid=|hostname=|"level"/);
  });

  it('names warnings and errors, with the stack of an error under its line', () => {
    const out = logged((log) =>
      log.error({ err: new Error('database gone') }, 'cannot delete expired deployment logs'),
    );
    const [first, second] = out.split('\n');
    assert.match(first!, /ERROR cannot delete expired deployment logs err="database gone"$/);
    assert.match(second!, /^ {4}Error: database gone$/);
  });

  it('passes a line that is not JSON through unchanged', () => {
    assert.equal(prettyLogLine('not json'), 'not json\n');
  });
});
