import { CairnError } from '../lib/cairn-error.ts';
import { type RolloutPlan, rolloutPlanSchema } from '../protocol/api-schemas.ts';
import type { DeployJsonInput } from '../protocol/deploy-json.ts';
import type { ApiClient } from './api-client.ts';
import { parseDuration } from './parse-duration.ts';

/**
 * The longest the CLI lets a plan wait for the machines: Node's fetch gives up on a response
 * whose headers take more than 300 s, and the server answers only once every machine has.
 */
const MAX_PLAN_TIMEOUT_SECONDS = 270;

/**
 * Asks the server for the plan of a deploy.json read with `readDeployJson` (`POST plan`), the
 * machines included: with `dryActivate`, NixOS machines dry-activate; `timeout` (a duration
 * such as `30s`) bounds the wait for them.
 * @throws CairnError INVALID_ARGUMENT for a bad --timeout, before any request.
 */
export async function requestPlan(
  client: ApiClient,
  body: DeployJsonInput,
  opts: { dryActivate?: boolean | undefined; timeout?: string | undefined },
): Promise<RolloutPlan> {
  const query = new URLSearchParams();
  if (opts.dryActivate) query.set('dryActivate', 'true');
  if (opts.timeout !== undefined) {
    const seconds = Math.ceil(parseDuration(opts.timeout, '--timeout') / 1000);
    if (seconds > MAX_PLAN_TIMEOUT_SECONDS)
      throw new CairnError(
        'INVALID_ARGUMENT',
        `Cannot use --timeout: a plan waits at most 4m30s (${opts.timeout})`,
      );
    query.set('timeout', String(Math.max(1, seconds)));
  }
  const q = query.size > 0 ? `?${query}` : '';
  return await client.request('POST', `plan${q}`, rolloutPlanSchema, body);
}
