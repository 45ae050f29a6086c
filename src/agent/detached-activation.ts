import { spawn } from 'node:child_process';
import { open, readFile, stat } from 'node:fs/promises';
import { sleep } from '../lib/backoff.ts';
import { processAlive } from '../lib/process-alive.ts';
import type { ActivationRecord } from '../protocol/agent-journal.ts';
import type { ActivationPlan } from './activate-profile.ts';

/** How a detached activation ended: the exit code and which command gave it. */
export interface DetachedStatus {
  readonly code: number;
  readonly label: string;
  readonly lastLine: string | undefined;
}

const quote = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;

/**
 * Starts the activation in its own session, with its output going to a file and its exit status
 * written to another (via a temporary file and a rename) when it ends. The agent can die, or be
 * restarted by the very switch it runs, and a new agent process finds the outcome in the file.
 * Returns the process id.
 */
export async function startDetachedActivation(
  plan: ActivationPlan,
  record: ActivationRecord,
): Promise<number> {
  const lines = ['exec >>"$CAIRN_ACTIVATION_LOG" 2>&1'];
  for (const c of plan.commands) {
    lines.push(`echo ${quote(`$ ${c.argv.join(' ')}`)}`);
    lines.push(`${c.argv.map(quote).join(' ')} </dev/null`);
    lines.push(
      `rc=$?; if [ $rc -ne 0 ]; then echo "$rc ${c.label}" > "$CAIRN_ACTIVATION_STATUS.tmp"; mv "$CAIRN_ACTIVATION_STATUS.tmp" "$CAIRN_ACTIVATION_STATUS"; exit $rc; fi`,
    );
  }
  lines.push(
    'echo "0 -" > "$CAIRN_ACTIVATION_STATUS.tmp"; mv "$CAIRN_ACTIVATION_STATUS.tmp" "$CAIRN_ACTIVATION_STATUS"',
  );
  const child = spawn('/bin/sh', ['-c', lines.join('\n')], {
    detached: true,
    stdio: 'ignore',
    env: { ...plan.env, CAIRN_ACTIVATION_LOG: record.logFile, CAIRN_ACTIVATION_STATUS: record.statusFile },
  });
  child.unref();
  const pid = child.pid;
  if (pid === undefined) throw new Error('cannot start the activation: no process id');
  return pid;
}

/**
 * Follows a detached activation: passes its output lines on as they are written (from the start
 * of its log, so a re-attached agent shows all of it) and resolves with its exit status. When the
 * process is gone without writing a status (the machine lost power), resolves with code -1.
 */
export async function waitForDetachedActivation(
  record: ActivationRecord,
  onLine: (line: string, from: { src: string; n: number }) => void,
): Promise<DetachedStatus> {
  let offset = 0;
  let partial = '';
  /** Byte offset of `partial` in the log: each line is numbered by where it starts, so a
   * re-attached agent sends the same numbers again and the server keeps each line once. */
  let lineStart = 0;
  const emit = (line: string) => {
    onLine(line, { src: 'activation', n: lineStart });
    lineStart += Buffer.byteLength(line) + 1;
  };
  let last: string | undefined;
  const drain = async () => {
    const handle = await open(record.logFile, 'r').catch(() => undefined);
    if (!handle) return;
    try {
      const { size } = await handle.stat();
      if (size <= offset) return;
      const buf = Buffer.alloc(size - offset);
      await handle.read(buf, 0, buf.length, offset);
      offset = size;
      const text = partial + buf.toString('utf8');
      const parts = text.split('\n');
      partial = parts.pop() ?? '';
      for (const line of parts) {
        last = line;
        emit(line);
      }
    } finally {
      await handle.close();
    }
  };
  for (;;) {
    await drain();
    const status = await readFile(record.statusFile, 'utf8').catch(() => undefined);
    if (status !== undefined) {
      await drain();
      if (partial) {
        emit(partial);
        last = partial;
      }
      const [code, label = '-'] = status.trim().split(' ');
      return { code: Number(code), label, lastLine: last };
    }
    if (record.pid !== null && !processAlive(record.pid)) {
      // One more look: the status may have landed between the two checks.
      if (
        await stat(record.statusFile).then(
          () => true,
          () => false,
        )
      )
        continue;
      await drain();
      return {
        code: -1,
        label: 'activation',
        lastLine: 'the activation process ended without an exit status (interrupted)',
      };
    }
    await sleep(100);
  }
}
