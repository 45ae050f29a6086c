import type { Recovered } from './agent-session.ts';
import type { JournalFile } from './journal-file.ts';

/**
 * Reads the journal before anything else: an interrupted deployment is resumed (at once when
 * it had changed the machine, else once connected), a finished one not yet reported is reported.
 */
export async function recoverJournal(
  journal: JournalFile,
  name: string,
  log: (line: string) => void,
): Promise<Recovered> {
  let read: Awaited<ReturnType<JournalFile['read']>>;
  try {
    read = await journal.read();
  } catch (err) {
    log(`WARNING: cannot read the journal ${journal.path}: ${(err as Error).message}; starting without it`);
    return {};
  }
  if (read.kind === 'corrupt') {
    log(
      `WARNING: the journal was corrupt (${read.reason}); moved it to ${read.movedTo} and starting without it. Check this machine's profile by hand.`,
    );
    return {};
  }
  if (read.kind === 'foreign') {
    log(`WARNING: set the journal aside as ${read.movedTo}: ${read.reason}; starting without it`);
    return {};
  }
  if (read.kind === 'none') return {};
  const j = read.journal;
  if (j.owner.agent !== name) {
    const movedTo = await journal.setAside();
    log(
      `WARNING: set the journal aside as ${movedTo}: it is agent ${j.owner.agent}'s, not ${name}'s (another agent used this state dir); starting without it`,
    );
    return {};
  }
  const finished = [j.deployment.id];
  const owner = j.owner;
  if (j.phase === 'done') {
    return {
      owner,
      finished,
      unreported: !j.reported && j.result ? [j.result] : [],
      ...(j.reported && j.result ? { reported: [j.result] } : {}),
    };
  }
  log(`journal: deployment ${j.deployment.id} was interrupted at ${j.phase}; finishing it first`);
  return j.phase === 'realise'
    ? { owner, finished, resumeWhenWelcomed: j }
    : { owner, finished, resumeNow: j };
}
