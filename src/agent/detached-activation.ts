import { spawn } from 'node:child_process';
import { open, readFile, stat } from 'node:fs/promises';
import { sleep } from '../lib/backoff.ts';
import { processAlive } from '../lib/process-alive.ts';
import type { ActivationRecord } from '../protocol/agent-journal.ts';
import type { ActivationPlan } from './activate-profile.ts';
import { currentBootId, startTransientUnit, unitRunning, unitState } from './transient-unit.ts';

/**
 * How a detached activation ended: the exit code and which command gave it, with the last lines
 * it printed. `unknown` says why the outcome could not be read (no status, or an empty or
 * incomplete one); `code` is then -1 and the activation counts as failed.
 */
export interface DetachedStatus {
  readonly code: number;
  readonly label: string;
  readonly lastLine: string | undefined;
  readonly tail: readonly string[];
  readonly unknown?: string;
}

/** A complete status file: "<exit code> <label>" and a newline, nothing else. */
const STATUS_LINE = /^(\d+) (\S+)\n$/;
/** How long a re-attached agent waits for the pid file of an activation whose pid it never recorded. */
const PID_FILE_WAIT_MS = 10_000;

const quote = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;

/**
 * Starts the activation in the transient systemd unit `record.unit` names, or else in its own
 * session, with its output going to a file and its exit status written to another (via a
 * temporary file and a rename) when it ends. The agent can die, or be restarted by the very
 * switch it runs, and a new agent process finds the outcome in the file. Returns the process id
 * of a detached process, null for a unit (which is followed by its name).
 */
export async function startDetachedActivation(
  plan: ActivationPlan,
  record: ActivationRecord,
): Promise<number | null> {
  // The log and status paths are positional parameters ($1, $2), not variables, so nothing of
  // the agent's reaches the activation's environment. The status is written to a temporary
  // file, flushed to disk, and renamed into place: a crash leaves no status or a whole one.
  const status = (rc: string, label: string) =>
    `printf '%s %s\\n' ${rc} ${quote(label)} > "$2.tmp"; sync "$2.tmp" 2>/dev/null || sync; mv "$2.tmp" "$2"; sync "$(dirname "$2")" 2>/dev/null || true`;
  const lines = ['echo $$ > "$2.pid"', 'exec >>"$1" 2>&1'];
  for (const c of plan.commands) {
    lines.push(`echo ${quote(`$ ${c.argv.join(' ')}`)}`);
    lines.push(`${c.argv.map(quote).join(' ')} </dev/null`);
    lines.push(`rc=$?; if [ $rc -ne 0 ]; then ${status('"$rc"', c.label)}; exit $rc; fi`);
  }
  lines.push(status('0', '-'));
  if (record.unit) {
    await startTransientUnit(
      record.unit.name,
      ['/bin/sh', '-c', lines.join('\n'), 'cairn-activation', record.logFile, record.statusFile],
      { env: plan.env, description: `Cairn activation of ${record.storePath}` },
    );
    return null;
  }
  const child = spawn(
    '/bin/sh',
    ['-c', lines.join('\n'), 'cairn-activation', record.logFile, record.statusFile],
    {
      detached: true,
      stdio: 'ignore',
      env: plan.env,
    },
  );
  child.unref();
  const pid = child.pid;
  if (pid === undefined) throw new Error('cannot start the activation: no process id');
  return pid;
}

/** True while `pid` runs: a zombie (ended, not yet reaped) counts as ended. */
async function running(pid: number): Promise<boolean> {
  if (!processAlive(pid)) return false;
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => undefined);
  // "pid (comm) S ...": the state follows the last ')'.
  return stat === undefined || stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
}

/**
 * Follows a detached activation: passes its output lines on as they are written (from the start
 * of its log, so a re-attached agent shows all of it) and resolves with its exit status. When the
 * process is gone without writing a status (the machine lost power), resolves with code -1.
 */
export async function waitForDetachedActivation(
  record: ActivationRecord,
  onLine: (line: string, from: { src: string; n: number }) => void,
  options: { env?: NodeJS.ProcessEnv } = {},
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
  const tail: string[] = [];
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
        tail.push(line);
        if (tail.length > 20) tail.shift();
        emit(line);
      }
    } finally {
      await handle.close();
    }
  };
  const finish = async (): Promise<void> => {
    await drain();
    if (partial) {
      emit(partial);
      last = partial;
      tail.push(partial);
      partial = '';
    }
  };
  const ended = (unknown: string): DetachedStatus => ({
    code: -1,
    label: 'activation',
    lastLine: last,
    tail,
    unknown,
  });
  let pid = record.pid;
  const waitingSince = Date.now();
  let systemctlFailures = 0;
  const incomplete = (text: string) =>
    `the activation's outcome is unknown: its status file ${record.statusFile} is ${
      text === '' ? 'empty' : 'incomplete'
    } (the machine may have lost power while writing it)`;
  for (;;) {
    await drain();
    const status = await readFile(record.statusFile, 'utf8').catch(() => undefined);
    const m = status === undefined ? null : STATUS_LINE.exec(status);
    if (m) {
      await finish();
      return { code: Number(m[1]), label: m[2]!, lastLine: last, tail };
    }
    if (record.unit) {
      const why = await unitGone(record.unit, options.env ?? { PATH: process.env.PATH }, {
        started: (await stat(`${record.statusFile}.pid`).catch(() => undefined)) !== undefined,
        waitedMs: Date.now() - waitingSince,
        failures: () => ++systemctlFailures,
      });
      if (why === undefined) {
        await sleep(100);
        continue;
      }
      const again = await readFile(record.statusFile, 'utf8').catch(() => undefined);
      if (again !== undefined && STATUS_LINE.test(again)) continue;
      await finish();
      if (again !== undefined) return ended(incomplete(again));
      return ended(why);
    }
    if (pid === null) {
      const text = await readFile(`${record.statusFile}.pid`, 'utf8').catch(() => '');
      pid = /^\d+\n?$/.test(text) ? Number(text) : null;
    }
    const gone =
      pid !== null
        ? !(await running(pid))
        : status !== undefined || Date.now() - waitingSince > PID_FILE_WAIT_MS;
    if (gone) {
      // One more look: the status may have landed between the two checks.
      const again = await readFile(record.statusFile, 'utf8').catch(() => undefined);
      if (again !== undefined && STATUS_LINE.test(again)) continue;
      await finish();
      if (again !== undefined) return ended(incomplete(again));
      return ended(
        pid === null
          ? "the activation's outcome is unknown: it left no process id and no exit status (the agent stopped as it started it)"
          : 'the activation process ended without an exit status (interrupted)',
      );
    }
    await sleep(100);
  }
}

/** How many failed `systemctl show` (100 ms apart) end the wait for a unit. */
const SYSTEMCTL_FAILURES = 50;

/**
 * Why the activation's unit can no longer write a status, or undefined while it may. Checked
 * only while there is no complete status: a boot id other than the one recorded means the
 * machine rebooted during the activation; a unit that systemd no longer knows (collected) or
 * that stopped means it ended without writing one. A unit not found before its script wrote its
 * pid file may still be starting (the agent stopped as systemd-run ran): that is waited for up
 * to 10 s, as for a detached process.
 */
async function unitGone(
  unit: { name: string; bootId: string | null },
  env: NodeJS.ProcessEnv,
  seen: { started: boolean; waitedMs: number; failures: () => number },
): Promise<string | undefined> {
  const boot = await currentBootId();
  if (unit.bootId !== null && boot !== undefined && boot !== unit.bootId)
    return `the machine rebooted during the activation: it left no exit status, and its unit ${unit.name} ended with the boot it ran in (boot id ${unit.bootId}, now ${boot})`;
  let state: Awaited<ReturnType<typeof unitState>>;
  try {
    state = await unitState(unit.name, env);
  } catch (err) {
    if (seen.failures() < SYSTEMCTL_FAILURES) return undefined;
    return `the activation's outcome is unknown: cannot read the state of its unit ${unit.name} (${(err as Error).message})`;
  }
  if (unitRunning(state)) return undefined;
  if (!seen.started && seen.waitedMs < PID_FILE_WAIT_MS) return undefined;
  if (!state.loaded)
    return seen.started
      ? `the activation's unit ${unit.name} is gone and left no exit status (it was stopped or killed)`
      : `the activation's unit ${unit.name} does not exist and its script never ran (the agent stopped as it started it)`;
  return `the activation's unit ${unit.name} ended (${state.activeState}, result ${state.result}, exit status ${state.execMainStatus}) without writing an exit status`;
}
