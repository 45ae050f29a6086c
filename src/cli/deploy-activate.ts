import { readFile } from 'node:fs/promises';
import { CairnError } from '../lib/cairn-error.ts';
import { rolloutInfoSchema } from '../protocol/api-schemas.ts';
import { type DeployJsonInput, deployJsonSchema } from '../protocol/deploy-json.ts';
import { parseOrThrow } from '../protocol/parse-or-throw.ts';
import type { ApiClient } from './api-client.ts';
import type { CliIo } from './command-context.ts';
import { followRollout } from './follow-rollout.ts';
import { formatPlan, PLAN_EXIT, planExitCode } from './format-plan.ts';
import { requestPlan } from './request-plan.ts';
import { forTerminal } from './terminal-text.ts';

/** The exit code of `deploy activate --plan` answered with anything but yes: nothing was created. */
const DECLINED_EXIT = 1;

/**
 * `deploy activate --plan`: prints the plan of the agents to deploy to, then asks on the
 * terminal whether to go on, unless `yes`. Without a terminal and without `yes` it refuses
 * before asking the server anything: CI must say `--yes`, and nothing waits for an answer
 * that cannot come.
 */
async function showPlanAndConfirm(
  client: ApiClient,
  io: CliIo,
  o: { deploy: DeployJsonInput; agents: readonly string[]; yes: boolean },
): Promise<boolean> {
  if (!o.yes && !io.ask)
    throw new CairnError(
      'INVALID_ARGUMENT',
      'Cannot confirm the plan: stdin is not a terminal; pass --yes to activate after printing the plan',
    );
  const { agents } = o.deploy as { agents: Record<string, string> };
  const chosen =
    o.agents.length === 0
      ? agents
      : Object.fromEntries(o.agents.filter((a) => Object.hasOwn(agents, a)).map((a) => [a, agents[a]]));
  const plan = await requestPlan(client, { ...o.deploy, agents: chosen } as DeployJsonInput, {});
  io.stdout.write(forTerminal(io.stdout, { keepNewlines: true })(formatPlan(plan)));
  if (planExitCode(plan) === PLAN_EXIT.blocked)
    io.stderr.write('cairn: the plan shows a machine that would fail (see above)\n');
  if (o.yes || !io.ask) return true;
  const answer = await io.ask('Activate this plan? [y/N] ');
  if (/^\s*y(es)?\s*$/i.test(answer)) return true;
  io.stderr.write('cairn: not activated\n');
  return false;
}

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
  /** `--plan`: print the plan first and ask for confirmation (unless `yes`). */
  readonly plan?: boolean;
  /** `--yes`: activate after the plan without asking. */
  readonly yes?: boolean;
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
  if (options.plan) {
    const go = await showPlanAndConfirm(client, io, {
      deploy,
      agents: options.agents,
      yes: options.yes === true,
    });
    if (!go) return DECLINED_EXIT;
  }
  const query = options.agents.map((a) => `agent=${encodeURIComponent(a)}`).join('&');
  const rollout = await client.request(
    'POST',
    `rollouts${query ? `?${query}` : ''}`,
    rolloutInfoSchema,
    deploy,
  );
  return await followRollout(client, io, rollout, options);
}
