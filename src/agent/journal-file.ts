import { randomBytes } from 'node:crypto';
import { mkdir, open, readFile, rename } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { AGENT_JOURNAL_VERSION, type AgentJournal, agentJournalSchema } from '../protocol/agent-journal.ts';
import { fieldProblems, formatProblems } from '../protocol/parse-or-throw.ts';

/** What reading the journal found. */
export type JournalRead =
  | { readonly kind: 'none' }
  | { readonly kind: 'ok'; readonly journal: AgentJournal }
  | { readonly kind: 'corrupt'; readonly reason: string; readonly movedTo: string }
  /** Written in another journal format (an older agent's): set aside, unread. */
  | { readonly kind: 'foreign'; readonly reason: string; readonly movedTo: string };

/**
 * The journal file, `<state dir>/journal.json`. Each write goes to a new file that is fsynced and
 * renamed over the old one, then the directory is fsynced: a crash at any point leaves either the
 * old journal or the new one, whole.
 */
export class JournalFile {
  readonly path: string;

  constructor(stateDir: string) {
    this.path = join(stateDir, 'journal.json');
  }

  /**
   * Reads the journal. A corrupt one, or one of another format version, is moved aside (kept for
   * inspection) and reported, never thrown.
   */
  async read(): Promise<JournalRead> {
    let text: string;
    try {
      text = await readFile(this.path, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { kind: 'none' };
      throw err;
    }
    let reason: string;
    try {
      const json: unknown = JSON.parse(text);
      const version = (json as { version?: unknown } | null)?.version;
      if (typeof version === 'number' && version !== AGENT_JOURNAL_VERSION) {
        const reason = `journal format ${version}, not ${AGENT_JOURNAL_VERSION}: written by another agent version`;
        return { kind: 'foreign', reason, movedTo: await this.setAside() };
      }
      const parsed = agentJournalSchema.safeParse(json);
      if (parsed.success) return { kind: 'ok', journal: parsed.data };
      reason = formatProblems(fieldProblems(parsed.error, 'journal'));
    } catch (err) {
      reason = `not JSON (${(err as Error).message})`;
    }
    const movedTo = `${this.path}.corrupt-${Date.now()}`;
    await rename(this.path, movedTo);
    return { kind: 'corrupt', reason, movedTo };
  }

  /**
   * Moves the journal aside as `journal.json.foreign-<ms>` (kept for inspection): it belongs to
   * another agent, server or workspace. Returns where it went.
   */
  async setAside(): Promise<string> {
    const movedTo = `${this.path}.foreign-${Date.now()}`;
    await rename(this.path, movedTo);
    return movedTo;
  }

  /** Replaces the journal atomically and durably. */
  async write(journal: AgentJournal): Promise<void> {
    const dir = dirname(this.path);
    await mkdir(dir, { recursive: true, mode: 0o700 });
    const tmp = join(dir, `.journal-${randomBytes(4).toString('hex')}.tmp`);
    const handle = await open(tmp, 'w', 0o600);
    try {
      await handle.writeFile(`${JSON.stringify(journal, null, 2)}\n`);
      await handle.sync();
    } finally {
      await handle.close();
    }
    await rename(tmp, this.path);
    const d = await open(dir, 'r');
    try {
      await d.sync();
    } finally {
      await d.close();
    }
  }
}
