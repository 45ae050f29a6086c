import { stat } from 'node:fs/promises';
import { CairnError } from '../lib/cairn-error.ts';
import { runLines } from '../lib/run-lines.ts';
import type {
  AgentCache,
  DeploymentResult,
  DeploymentStep,
  DesiredDeployment,
} from '../protocol/agent-protocol.ts';
import { activateProfile } from './activate-profile.ts';
import {
  dropInFlightRoots,
  freeStoreBytes,
  type NixContext,
  plannedUnpackedBytes,
  realise,
  setProfile,
  withNetrc,
} from './nix-commands.ts';
import { detectProfileKind } from './profile-kind.ts';
import { readProfileState } from './profile-state.ts';

/** What running a deployment needs. */
export interface RunDeploymentContext extends NixContext {
  readonly profile: string;
  readonly caches: readonly AgentCache[];
  readonly token: string;
  readonly onStep: (step: DeploymentStep) => void;
}

/** Extra room kept free on the store's disk beyond what a download needs. */
const DISK_MARGIN = 1.1;

class StepFailure extends Error {
  constructor(
    readonly step: DeploymentStep,
    message: string,
  ) {
    super(message);
  }
}

/**
 * Runs one deployment: realise the closure, set the profile, activate by kind, run the rollback
 * script; on a failure after the profile changed, switch back to the store path it pointed to
 * before (recorded first) and re-activate it. Every step is logged through `ctx.onLine`.
 * Resolves with the result to report; it never throws for a failed deployment.
 */
export async function runDeployment(
  ctx: RunDeploymentContext,
  d: DesiredDeployment,
): Promise<DeploymentResult> {
  const result = (
    state: DeploymentResult['state'],
    step: DeploymentStep | null,
    reason: string | null,
  ): DeploymentResult => ({
    deploymentId: d.id,
    state,
    step,
    reason,
  });
  const say = ctx.onLine;
  let previous: string | null = null;
  let switched = false;
  try {
    // 1. Realise.
    ctx.onStep('realise');
    const paths = d.rollbackScript ? [d.storePath, d.rollbackScript] : [d.storePath];
    await withNetrc(ctx, ctx.caches, ctx.token, async (netrc) => {
      // Paths already on disk download nothing: skip the dry run that would say so.
      const present = await Promise.all(
        paths.map((p) =>
          stat(p).then(
            () => true,
            () => false,
          ),
        ),
      );
      const planned = present.every(Boolean)
        ? undefined
        : await plannedUnpackedBytes(ctx, paths, ctx.caches, netrc);
      if (planned !== undefined && planned > 0) {
        const free = await freeStoreBytes();
        say(
          `download: ${(planned / 1024 / 1024).toFixed(1)} MiB unpacked; ${(free / 1024 / 1024).toFixed(0)} MiB free on /nix/store`,
        );
        if (planned * DISK_MARGIN > free) {
          throw new StepFailure(
            'realise',
            `not enough disk space: the closure needs ${(planned / 1024 / 1024).toFixed(1)} MiB, /nix/store has ${(free / 1024 / 1024).toFixed(1)} MiB free`,
          );
        }
      }
      say(`$ nix-store --realise ${paths.join(' ')}`);
      const r = await realise(ctx, paths, ctx.caches, netrc);
      if (r.code !== 0)
        throw new StepFailure(
          'realise',
          `cannot realise ${d.storePath}: ${r.tail.at(-1) ?? `exit ${r.code}`}`,
        );
    });
    const kind = await detectProfileKind(d.storePath);
    say(`kind: ${kind}`);

    // 2. Set the profile, after recording where it pointed.
    ctx.onStep('set-profile');
    previous = (await readProfileState(ctx.profile)).storePath;
    say(`previous: ${previous ?? '(none: first deployment to this profile)'}`);
    const set = await setProfile(ctx, ctx.profile, d.storePath);
    if (set.code !== 0)
      throw new StepFailure('set-profile', `nix-env --set failed: ${set.tail.at(-1) ?? `exit ${set.code}`}`);
    switched = true;

    // 3. Activate.
    ctx.onStep('activate');
    const outcome = await activateProfile(d.storePath, kind, { onLine: say, env: ctx.env, exit4: d.exit4 });
    if (!outcome.ok) throw new StepFailure('activate', outcome.reason);
    if (outcome.note) say(`note: ${outcome.note}`);

    // 4. The rollback script decides whether the new configuration stays.
    if (d.rollbackScript) {
      ctx.onStep('rollback-script');
      say(`$ ${d.rollbackScript}`);
      const r = await runLines(d.rollbackScript, [], { env: ctx.env, onLine: say });
      if (r.code !== 0)
        throw new StepFailure('rollback-script', `rollback script exited with ${r.code ?? r.signal}`);
    }
    ctx.onStep('done');
    say(`deployed ${d.storePath}`);
    return result('succeeded', null, null);
  } catch (err) {
    const step = err instanceof StepFailure ? err.step : 'realise';
    const reason =
      err instanceof StepFailure || err instanceof CairnError
        ? err.message
        : `unexpected error: ${String(err)}`;
    say(`error in ${step}: ${reason}`);
    if (!switched) return result('failed', step, reason);
    return await rollBack(ctx, d, { previous, step, reason });
  } finally {
    await dropInFlightRoots(ctx).catch(() => {});
  }
}

async function rollBack(
  ctx: RunDeploymentContext,
  d: DesiredDeployment,
  why: { previous: string | null; step: DeploymentStep; reason: string },
): Promise<DeploymentResult> {
  const say = ctx.onLine;
  const fail = (reason: string): DeploymentResult => ({
    deploymentId: d.id,
    state: 'failed',
    step: why.step,
    reason,
  });
  if (why.previous === null) {
    say(
      'ROLLBACK IMPOSSIBLE: the profile had no previous generation; the machine runs the failed configuration',
    );
    return fail(`${why.reason}; no previous generation to roll back to`);
  }
  ctx.onStep('rollback');
  say(`rolling back to ${why.previous}`);
  const set = await setProfile(ctx, ctx.profile, why.previous);
  if (set.code !== 0) {
    say('ROLLBACK FAILED: cannot set the profile back');
    return fail(`${why.reason}; rollback failed: nix-env --set exited with ${set.code}`);
  }
  let kind: Awaited<ReturnType<typeof detectProfileKind>>;
  try {
    kind = await detectProfileKind(why.previous);
  } catch (err) {
    return fail(`${why.reason}; rollback failed: ${(err as Error).message}`);
  }
  // Re-activating the old generation must not be cut short by the exit-4 policy.
  const outcome = await activateProfile(why.previous, kind, { onLine: say, env: ctx.env, exit4: 'tolerate' });
  if (!outcome.ok) {
    say(`ROLLBACK FAILED: ${outcome.reason}`);
    return fail(`${why.reason}; rollback failed: ${outcome.reason}`);
  }
  say(`rolled back to ${why.previous}`);
  return { deploymentId: d.id, state: 'rolled-back', step: why.step, reason: why.reason };
}
