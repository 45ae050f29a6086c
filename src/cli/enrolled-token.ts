import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { CairnError } from '../lib/cairn-error.ts';
import { enrolledAgentSchema } from '../protocol/enrol-schemas.ts';
import { ApiClient } from './api-client.ts';

/** The file in the agent's state dir that holds the token its enrolment gave it (mode 0600). */
export const ENROLLED_TOKEN_FILE = 'agent-token';

/**
 * The token the agent runs with: CAIRN_AGENT_TOKEN when set; else the one an earlier enrolment
 * stored in the state dir; else, with `enrol`, a new agent token obtained by enrolling with the
 * enrolment token, stored 0600 for every later start (which therefore never enrols again).
 * @throws CairnError INVALID_ARGUMENT when there is no token to use; the server's refusal of an enrolment.
 */
export async function agentToken(options: {
  readonly name: string;
  readonly stateDir: string;
  readonly env: NodeJS.ProcessEnv;
  readonly server: string;
  readonly workspace: string;
  /** `--enrol`, with the token file of `--enrol-token-file` if given. */
  readonly enrol?: { readonly tokenFile?: string | undefined } | undefined;
  readonly log: (line: string) => void;
}): Promise<string> {
  const fromEnv = options.env.CAIRN_AGENT_TOKEN?.trim();
  if (fromEnv) return fromEnv;
  const file = join(options.stateDir, ENROLLED_TOKEN_FILE);
  const stored = (await readFile(file, 'utf8').catch(() => '')).trim();
  if (stored) return stored;
  if (!options.enrol) {
    throw new CairnError(
      'INVALID_ARGUMENT',
      'Cannot start the agent: set CAIRN_AGENT_TOKEN to the token "cairn agent create" printed, or enrol with --enrol and an enrolment token',
    );
  }
  const enrolToken = await enrolmentToken(options.enrol.tokenFile, options.env);
  const client = new ApiClient({ server: options.server, token: enrolToken, workspace: options.workspace });
  const enrolled = await client.request('POST', 'enrol', enrolledAgentSchema, { name: options.name });
  // Written whole or not at all: a crash midway must not leave half a token to start with.
  await mkdir(options.stateDir, { recursive: true, mode: 0o700 });
  const partial = `${file}.${process.pid}.tmp`;
  await writeFile(partial, `${enrolled.token}\n`, { mode: 0o600 });
  await rename(partial, file);
  options.log(
    `enrolled as agent ${options.name}; its own token is stored in ${file}${enrolled.agent.pendingApproval ? `; it receives no deployment until an admin runs: cairn agent approve ${options.name}` : ''}`,
  );
  return enrolled.token;
}

/** The enrolment token, from `--enrol-token-file` or CAIRN_ENROL_TOKEN. */
async function enrolmentToken(tokenFile: string | undefined, env: NodeJS.ProcessEnv): Promise<string> {
  if (tokenFile !== undefined) {
    let text: string;
    try {
      text = await readFile(tokenFile, 'utf8');
    } catch (err) {
      throw new CairnError(
        'INVALID_ARGUMENT',
        `Cannot enrol: cannot read --enrol-token-file: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message} (${tokenFile})`,
      );
    }
    if (text.trim()) return text.trim();
    throw new CairnError(
      'INVALID_ARGUMENT',
      `Cannot enrol: the enrolment token file is empty (${tokenFile})`,
    );
  }
  const token = env.CAIRN_ENROL_TOKEN?.trim();
  if (token) return token;
  throw new CairnError(
    'INVALID_ARGUMENT',
    'Cannot enrol: set CAIRN_ENROL_TOKEN, or give --enrol-token-file, with the token "cairn agent enrol-token create" printed',
  );
}
