import { randomBytes } from 'node:crypto';
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { CairnError } from '../lib/cairn-error.ts';
import { ENROL_KEY, enrolledAgentSchema } from '../protocol/enrol-schemas.ts';
import { ApiClient } from './api-client.ts';

/** The file in the agent's state dir that holds the token its enrolment gave it (mode 0600). */
export const ENROLLED_TOKEN_FILE = 'agent-token';
/**
 * The file in the agent's state dir that holds the key it enrols with (mode 0600), made before
 * its first enrolment: should the answer be lost, the next start enrols again under the same
 * name with the same key, instead of finding its own name taken.
 */
export const ENROL_KEY_FILE = 'enrol-key';

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
  await mkdir(options.stateDir, { recursive: true, mode: 0o700 });
  const key = await enrolKey(join(options.stateDir, ENROL_KEY_FILE));
  const client = new ApiClient({ server: options.server, token: enrolToken, workspace: options.workspace });
  const enrolled = await client.request('POST', 'enrol', enrolledAgentSchema, { name: options.name, key });
  await writeWhole(file, `${enrolled.token}\n`);
  options.log(
    `enrolled as agent ${options.name}; its own token is stored in ${file}${enrolled.agent.pendingApproval ? `; it receives no deployment until an admin runs: cairn agent approve ${options.name}` : ''}`,
  );
  return enrolled.token;
}

/** Writes a file whole or not at all (mode 0600): a crash midway must not leave half a secret. */
async function writeWhole(file: string, text: string): Promise<void> {
  const partial = `${file}.${process.pid}.tmp`;
  await writeFile(partial, text, { mode: 0o600 });
  await rename(partial, file);
}

/** The machine's enrolment key: the one stored in `file`, or a new one stored there first. */
async function enrolKey(file: string): Promise<string> {
  const stored = (await readFile(file, 'utf8').catch(() => '')).trim();
  if (ENROL_KEY.test(stored)) return stored;
  const key = randomBytes(32).toString('base64url');
  await writeWhole(file, `${key}\n`);
  return key;
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
