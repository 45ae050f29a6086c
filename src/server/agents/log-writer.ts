import type { DeploymentLogsTable } from '../db/database-schema.ts';
import type { DeploymentRepository } from '../db/deployment-repository.ts';

/** Log lines kept in memory before a flush is forced. */
const MAX_BUFFERED = 2000;
/** How long lines wait to be written together. */
const FLUSH_MS = 50;

/**
 * Numbers log lines per deployment and writes them in batches: one INSERT for everything that
 * arrived within 50 ms, from every agent, instead of one per message.
 */
export class LogWriter {
  readonly #repo: DeploymentRepository;
  readonly #seq = new Map<number, number>();
  #buffer: DeploymentLogsTable[] = [];
  #timer: NodeJS.Timeout | undefined;
  #flushing: Promise<void> = Promise.resolve();
  readonly #onError: (err: unknown) => void;

  constructor(repo: DeploymentRepository, onError: (err: unknown) => void) {
    this.#repo = repo;
    this.#onError = onError;
  }

  /** Numbers the lines and queues them; resolves to the numbered lines. */
  async append(
    deploymentId: number,
    lines: ReadonlyArray<{ t: number; text: string }>,
  ): Promise<DeploymentLogsTable[]> {
    let seq = this.#seq.get(deploymentId);
    if (seq === undefined) {
      // First lines seen here: continue after what an earlier connection wrote.
      seq = await this.#repo.lastLogSeq(deploymentId);
      seq = Math.max(seq, this.#seq.get(deploymentId) ?? 0);
    }
    const rows = lines.map((l) => ({ deployment_id: deploymentId, seq: ++seq!, t: l.t, text: l.text }));
    this.#seq.set(deploymentId, seq);
    this.#buffer.push(...rows);
    if (this.#buffer.length >= MAX_BUFFERED) void this.flush();
    else this.#timer ??= setTimeout(() => void this.flush(), FLUSH_MS);
    return rows;
  }

  /** Forgets a finished deployment's counter. */
  forget(deploymentId: number): void {
    this.#seq.delete(deploymentId);
  }

  /** Writes everything buffered. */
  async flush(): Promise<void> {
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = undefined;
    const batch = this.#buffer;
    this.#buffer = [];
    this.#flushing = this.#flushing.then(async () => {
      try {
        await this.#repo.appendLogs(batch);
      } catch (err) {
        this.#onError(err);
      }
    });
    await this.#flushing;
  }
}
