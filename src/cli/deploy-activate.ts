import { readFile } from 'node:fs/promises';
import { CairnError } from '../lib/cairn-error.ts';
import { rolloutInfoSchema } from '../protocol/api-schemas.ts';
import { type DeployJsonInput, deployJsonSchema } from '../protocol/deploy-json.ts';
import { parseOrThrow } from '../protocol/parse-or-throw.ts';
import type { ApiClient } from './api-client.ts';
import type { CliIo } from './command-context.ts';
import { followRollout } from './follow-rollout.ts';

/** Reads a JSON file, with one clear error for a file that cannot be read and one for bad JSON. */
async function readJsonFile(file: string): Promise<unknown> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    throw new CairnError(
      'INVALID_ARGUMENT',
      `Cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`,
    );
  }
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new CairnError(
      'INVALID_ARGUMENT',
      `Cannot parse ${file}: not valid JSON (${(err as Error).message})`,
    );
  }
}

/**
 * Reads and validates deploy.json, reporting every problem at once. Returns the file as written
 * (the server validates it again and fills in defaults itself: durations stay `1m`, not 60000).
 * With `rolloutFile` (`--rollout`), that file's policy becomes the body's `rollout` key, so that
 * deploy.json itself stays byte-compatible with Cachix Deploy's; a deploy.json that has its own
 * `rollout` key is then refused rather than one of the two silently winning.
 */
export async function readDeployJson(file: string, rolloutFile?: string): Promise<DeployJsonInput> {
  const json = await readJsonFile(file);
  if (rolloutFile === undefined) {
    parseOrThrow(deployJsonSchema, json, { action: `use ${file}`, whole: '(file)' });
    return json as DeployJsonInput;
  }
  const policy = await readJsonFile(rolloutFile);
  if (json === null || typeof json !== 'object' || Array.isArray(json)) {
    parseOrThrow(deployJsonSchema, json, { action: `use ${file}`, whole: '(file)' });
  }
  if (Object.hasOwn(json as object, 'rollout')) {
    throw new CairnError(
      'INVALID_ARGUMENT',
      `Cannot use --rollout ${rolloutFile}: ${file} has a rollout key of its own; give the policy in one place only`,
    );
  }
  const body = { ...(json as object), rollout: policy };
  parseOrThrow(deployJsonSchema, body, {
    action: `use ${file} with --rollout ${rolloutFile}`,
    whole: '(file)',
  });
  return body as DeployJsonInput;
}

/** Options of {@link deployActivate}. */
export interface DeployActivateOptions {
  readonly file: string;
  /** A file holding the staged-rollout policy (`--rollout`). */
  readonly rolloutFile?: string | undefined;
  readonly agents: readonly string[];
  readonly async: boolean;
  readonly timeoutMs: number | undefined;
}

/**
 * `cairn deploy activate`: validates deploy.json (and the `--rollout` policy) before any request,
 * creates the rollout, then follows it to its end (or the timeout) and returns the exit code.
 */
export async function deployActivate(
  client: ApiClient,
  io: CliIo,
  options: DeployActivateOptions,
): Promise<number> {
  const deploy = await readDeployJson(options.file, options.rolloutFile);
  const query = options.agents.map((a) => `agent=${encodeURIComponent(a)}`).join('&');
  const rollout = await client.request(
    'POST',
    `rollouts${query ? `?${query}` : ''}`,
    rolloutInfoSchema,
    deploy,
  );
  return await followRollout(client, io, rollout, options);
}
