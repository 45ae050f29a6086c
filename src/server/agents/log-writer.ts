import type { DeploymentLogsTable } from '../db/database-schema.ts';
import type { DeploymentRepository } from '../db/deployment-repository.ts';
import { IN_LIST_SIZE, inChunks } from '../db/in-chunks.ts';
import type { LogEvent } from '../events/event-bus.ts';

/** Log lines queued before a flush is started at once. */
const FLUSH_AT = 2000;
/** Log lines queued or being written beyond which {@link LogWriter.append} asks the caller to wait. */
const HIGH_WATER = 50_000;
/** How long lines wait to be written together. */
const FLUSH_MS = 50;

/** The deployment some lines belong to, as the hub knows it. */
export interface LogTarget {
  readonly deploymentId: number;
  readonly rolloutId: number;
  readonly agent: string;
}

interface Queued {
  readonly target: LogTarget;
  readonly lines: ReadonlyArray<{ t: number; text: string }>;
}

/**
 * Numbers log lines per deployment and writes them in batches: for everything that arrived
 * within 50 ms, from every agent, one query for the numbering of deployments not seen before and
 * one INSERT per thousand lines, instead of queries per message. Lines are announced (`onWritten`)
 * once written, so a reader that replays the database and then follows the announcements misses
 * nothing.
 */
export class LogWriter {
  readonly #repo: DeploymentRepository;
  readonly #seq = new Map<number, number>();
  /** Per deployment, the highest line number seen from each source (see logLineSchema). */
  readonly #seen = new Map<number, Map<string, number>>();
  #buffer: Queued[] = [];
  #buffered = 0;
  /** Lines taken from the buffer whose write has not finished. */
  #writing = 0;
  #timer: NodeJS.Timeout | undefined;
  #flushing: Promise<void> = Promise.resolve();
  readonly #onError: (err: unknown) => void;
  readonly #onWritten: (event: LogEvent) => void;

  constructor(
    repo: DeploymentRepository,
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
  append(
    target: LogTarget,
    incoming: ReadonlyArray<{ t: number; text: string; src?: string | undefined; n?: number | undefined }>,
  ): boolean {
    let seen = this.#seen.get(target.deploymentId);
    const lines: Array<{ t: number; text: string }> = [];
    for (const l of incoming) {
      if (l.src !== undefined && l.n !== undefined) {
        seen ??= new Map();
        const last = seen.get(l.src);
        // Sent again: after a dropped connection, or by a restarted agent.
        if (last !== undefined && l.n <= last) continue;
        seen.set(l.src, l.n);
      }
      lines.push({ t: l.t, text: l.text });
    }
    if (seen) this.#seen.set(target.deploymentId, seen);
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
    this.#seq.delete(deploymentId);
    this.#seen.delete(deploymentId);
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
    // Deployments first seen here continue after what an earlier connection (or server) wrote.
    const unknown = [...new Set(batch.map((b) => b.target.deploymentId))].filter((id) => !this.#seq.has(id));
    for (const part of inChunks(unknown, IN_LIST_SIZE)) {
      const last = await this.#repo.lastLogSeqs(part);
      for (const id of part) this.#seq.set(id, last.get(id) ?? 0);
    }
    const rows: DeploymentLogsTable[] = [];
    const events: LogEvent[] = [];
    for (const { target, lines } of batch) {
      let seq = this.#seq.get(target.deploymentId) ?? 0;
      const numbered = lines.map((l) => ({ seq: ++seq, t: l.t, text: l.text }));
      this.#seq.set(target.deploymentId, seq);
      for (const l of numbered) rows.push({ deployment_id: target.deploymentId, ...l });
      events.push({
        rolloutId: target.rolloutId,
        deploymentId: target.deploymentId,
        agent: target.agent,
        lines: numbered,
      });
    }
    await this.#repo.appendLogs(rows);
    for (const e of events) this.#onWritten(e);
  }
}
