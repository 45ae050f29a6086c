import type { DeploymentLogSourcesTable, DeploymentLogsTable } from '../db/database-schema.ts';
import { IN_LIST_SIZE, inChunks } from '../db/in-chunks.ts';
import type { LogHighWater, LogLineRepository } from '../db/log-line-repository.ts';
import type { LogEvent } from '../events/event-bus.ts';

/** Log lines queued before a flush is started at once. */
const FLUSH_AT = 2000;
/** Log lines queued or being written beyond which {@link LogWriter.append} asks the caller to wait. */
const HIGH_WATER = 50_000;
/** How long lines wait to be written together. */
const FLUSH_MS = 50;
/** Tries of one batch: another replica writing the same deployment makes a try fail (see #write). */
const WRITE_TRIES = 3;
/**
 * Most log a deployment keeps, in lines and in characters of text: past either, one marker line
 * says so and further lines are dropped, so that one agent cannot fill the database (it sent
 * 60 MB in 4 s). A NixOS switch logs a few thousand lines.
 */
export const MAX_LOG_LINES = 100_000;
export const MAX_LOG_CHARS = 16 * 1024 * 1024;
/** Sources (`src`) of lines de-duplicated per deployment; lines of further sources are kept as sent. */
export const MAX_LOG_SOURCES = 64;
/** Longest line an agent sends (see logLineSchema). */
const MAX_LINE_CHARS = 16_384;

/**
 * Whether a deployment's log has no room for another line: one line short of the line cap, or
 * less than a longest line short of the character cap. It depends only on what is stored, so a
 * replica reading the marks again finds a capped log still full, and the marker is written once.
 */
function logFull(mark: { seq: number; chars: number }): boolean {
  return mark.seq >= MAX_LOG_LINES - 1 || mark.chars > MAX_LOG_CHARS - MAX_LINE_CHARS;
}

/** The last line of a deployment whose log reached its cap. */
export const LOG_CAP_MARKER = `[cairn] this deployment's log reached its limit (${MAX_LOG_LINES} lines or ${MAX_LOG_CHARS} characters); further lines were dropped`;

/** The deployment some lines belong to, as the hub knows it. */
export interface LogTarget {
  readonly deploymentId: number;
  readonly rolloutId: number;
  readonly agent: string;
}

/** A line as the agent sent it: `src` and `n` say where it came from, for dropping it if sent twice. */
type IncomingLine = { t: number; text: string; src?: string | undefined; n?: number | undefined };

interface Queued {
  readonly target: LogTarget;
  readonly lines: readonly IncomingLine[];
}

/**
 * Numbers log lines per deployment and writes them in batches: for everything that arrived
 * within 50 ms, from every agent, one query for the numbering of deployments not seen before and
 * one INSERT per thousand lines, instead of queries per message. Lines are announced (`onWritten`)
 * once written, so a reader that replays the database and then follows the announcements misses
 * nothing.
 *
 * The numbering and the last line number of each source (which drop lines sent twice) are read
 * from the database the first time a deployment is written here, then kept in memory. Memory can
 * fall behind only when the agent's lines went to another replica in between (it reconnected
 * there, and maybe back): the next line number is then taken already, the primary key refuses
 * the batch, and it is tried again from what the database holds. So lines are stored once, in
 * order, without gaps, whichever replicas an agent's connections land on.
 */
export class LogWriter {
  readonly #repo: LogLineRepository;
  /** Per deployment, its last line and the highest line number stored from each source (see logLineSchema). */
  readonly #marks = new Map<number, LogHighWater>();
  #buffer: Queued[] = [];
  #buffered = 0;
  /** Lines taken from the buffer whose write has not finished. */
  #writing = 0;
  #timer: NodeJS.Timeout | undefined;
  #flushing: Promise<void> = Promise.resolve();
  readonly #onError: (err: unknown) => void;
  readonly #onWritten: (event: LogEvent) => void;

  constructor(
    repo: LogLineRepository,
    onError: (err: unknown) => void,
    onWritten: (event: LogEvent) => void = () => {},
  ) {
    this.#repo = repo;
    this.#onError = onError;
    this.#onWritten = onWritten;
  }

  /**
   * Queues lines to be numbered and written. Returns false when more lines are waiting than the
   * writer holds comfortably: the caller should then await {@link flush} before reading more.
   */
  append(target: LogTarget, lines: readonly IncomingLine[]): boolean {
    if (lines.length === 0) return this.backlog < HIGH_WATER;
    this.#buffer.push({ target, lines });
    this.#buffered += lines.length;
    if (this.#buffered >= FLUSH_AT) void this.flush();
    else this.#timer ??= setTimeout(() => void this.flush(), FLUSH_MS);
    return this.#buffered + this.#writing < HIGH_WATER;
  }

  /** Lines queued or being written. */
  get backlog(): number {
    return this.#buffered + this.#writing;
  }

  /** Forgets a finished deployment's counter (after its lines were flushed). */
  forget(deploymentId: number): void {
    this.#marks.delete(deploymentId);
  }

  /** Writes everything queued so far; resolves once it is written (or failed and was reported). */
  async flush(): Promise<void> {
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = undefined;
    const batch = this.#buffer;
    const count = this.#buffered;
    this.#buffer = [];
    this.#buffered = 0;
    this.#writing += count;
    this.#flushing = this.#flushing.then(async () => {
      try {
        if (batch.length > 0) await this.#write(batch);
      } catch (err) {
        this.#onError(err);
      } finally {
        this.#writing -= count;
      }
    });
    await this.#flushing;
  }

  async #write(batch: readonly Queued[]): Promise<void> {
    for (let tries = 1; ; tries++) {
      try {
        await this.#writeOnce(batch);
        return;
      } catch (err) {
        // Most likely another replica wrote lines of one of these deployments since their marks
        // were read (the agent reconnected there, and maybe back): read them again.
        for (const { target } of batch) this.#marks.delete(target.deploymentId);
        if (tries >= WRITE_TRIES) throw err;
      }
    }
  }

  async #writeOnce(batch: readonly Queued[]): Promise<void> {
    // Deployments first seen here continue after what an earlier connection (or replica) wrote.
    const unknown = [...new Set(batch.map((b) => b.target.deploymentId))].filter(
      (id) => !this.#marks.has(id),
    );
    for (const part of inChunks(unknown, IN_LIST_SIZE)) {
      for (const [id, mark] of await this.#repo.highWater(part)) this.#marks.set(id, mark);
    }
    const rows: DeploymentLogsTable[] = [];
    const marks = new Map<string, DeploymentLogSourcesTable>();
    const events: LogEvent[] = [];
    // Worked on copies: a failed try must leave memory as the database is.
    const work = new Map<number, { seq: number; chars: number; sources: Map<string, number> }>();
    for (const { target, lines } of batch) {
      const id = target.deploymentId;
      let mark = work.get(id);
      if (!mark) {
        const held = this.#marks.get(id) ?? { seq: 0, chars: 0, sources: new Map<string, number>() };
        mark = { seq: held.seq, chars: held.chars, sources: new Map(held.sources) };
        work.set(id, mark);
      }
      const numbered: Array<{ seq: number; t: number; text: string }> = [];
      for (const l of lines) {
        // Full: the marker was written when it became so, and nothing follows it.
        if (logFull(mark)) break;
        if (l.src !== undefined && l.n !== undefined) {
          const last = mark.sources.get(l.src);
          // Sent again: after a dropped connection (to this replica or another), or by a restarted agent.
          if (last !== undefined && l.n <= last) continue;
          // A bounded set: an agent inventing sources cannot grow it (lines beyond are kept as sent).
          if (last !== undefined || mark.sources.size < MAX_LOG_SOURCES) {
            mark.sources.set(l.src, l.n);
            marks.set(`${id}\0${l.src}`, { deployment_id: id, src: l.src, last_n: l.n });
          }
        }
        mark.chars += l.text.length;
        numbered.push({ seq: ++mark.seq, t: l.t, text: l.text });
        if (logFull(mark)) {
          mark.chars += LOG_CAP_MARKER.length;
          numbered.push({ seq: ++mark.seq, t: l.t, text: LOG_CAP_MARKER });
          break;
        }
      }
      if (numbered.length === 0) continue;
      for (const l of numbered) rows.push({ deployment_id: id, ...l });
      events.push({ rolloutId: target.rolloutId, deploymentId: id, agent: target.agent, lines: numbered });
    }
    if (rows.length > 0 || marks.size > 0) await this.#repo.append(rows, [...marks.values()]);
    for (const [id, mark] of work) this.#marks.set(id, mark);
    for (const e of events) this.#onWritten(e);
  }
}
