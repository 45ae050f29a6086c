import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { runLines } from '../lib/run-lines.ts';
import { AGENT_JOURNAL_VERSION, type AgentJournal, type JournalOwner } from '../protocol/agent-journal.ts';
import type {
  AgentCache,
  DeploymentResult,
  DeploymentStep,
  DesiredDeployment,
} from '../protocol/agent-protocol.ts';
import { type ActivationOutcome, activationPlan, interpretActivation } from './activate-profile.ts';
import { childEnv } from './child-env.ts';
import { activateUserCommand } from './darwin.ts';
import { startDetachedActivation, waitForDetachedActivation } from './detached-activation.ts';
import { handRunSwitches } from './hand-run-switch.ts';
import { healthHttpPolicy, runHealthChecks } from './health-checks.ts';
import {
  activateSetsProfile,
  homeManagerCurrentGeneration,
  profileAfterLegacyActivate,
} from './home-manager.ts';
import type { JournalFile } from './journal-file.ts';
import { dropInFlightRoots, type NixContext, setProfile } from './nix-commands.ts';
import { preSwitchPolicy } from './pre-switch-policy.ts';
import { detectProfileKind } from './profile-kind.ts';
import { readProfileState } from './profile-state.ts';
import { DeploymentInterrupted, realiseClosure } from './realise-closure.ts';
import { rebootRequired } from './reboot-required.ts';
import { bootedSystemLink, checkRunningSystem, runningSystem } from './running-system.ts';
import {
  chooseSpecialisation,
  forcedSpecialisation,
  runningSpecialisation,
  specialisationPath,
} from './specialisation.ts';
import { StepFailure } from './step-failure.ts';
import { activationUnitName, currentBootId, systemdUsable } from './transient-unit.ts';

/** What running a deployment needs. */
export interface RunDeploymentContext extends NixContext {
  readonly profile: string;
  readonly caches: readonly AgentCache[];
  readonly token: string;
  readonly journal: JournalFile;
  readonly onStep: (step: DeploymentStep) => void;
  /**
   * Opens a new connection to the server and resolves true once the server confirms the
   * deployment over it, or false when that did not happen within `timeoutMs`.
   */
  readonly confirm: (deploymentId: string, timeoutMs: number) => Promise<boolean>;
  /** Called once the closure is on the machine, to report it; must not throw. */
  readonly onRealised?: (storePath: string) => Promise<void>;
}

/** A fresh journal for a deployment of `owner`'s about to start. */
export function newJournal(d: DesiredDeployment, owner: JournalOwner): AgentJournal {
  return {
    version: AGENT_JOURNAL_VERSION,
    owner,
    deployment: d,
    phase: 'realise',
    previous: null,
    switched: false,
    activation: null,
    failure: null,
    result: null,
    reported: false,
    updatedAt: Date.now(),
  };
}

/**
 * Runs a deployment from wherever its journal says it is: realise, set the profile (after
 * recording where it pointed), activate in a detached session, run the rollback script and the
 * health checks, and have the server confirm it over a new connection. A failure after the
 * profile changed switches back to the recorded previous path and re-activates it. The journal
 * is written before each step that changes the machine, so a new agent process can call this
 * again with the journal it finds and the deployment ends the same way. Never throws for a
 * failed deployment: it resolves with the result to report. It throws
 * {@link DeploymentInterrupted} when `ctx.signal` aborts before the profile changed.
 */
export async function driveDeployment(
  ctx: RunDeploymentContext,
  start: AgentJournal,
): Promise<DeploymentResult> {
  let j = start;
  const d = j.deployment;
  const say = ctx.onLine;
  const save = async (patch: Partial<AgentJournal>) => {
    j = { ...j, ...patch, updatedAt: Date.now() };
    await ctx.journal.write(j);
  };
  // Journaled: an agent restarted after the switch still reports it.
  let reboot = j.rebootRequired ?? false;
  const finish = async (
    state: DeploymentResult['state'],
    step: DeploymentStep | null,
    reason: string | null,
    rebootRequired = reboot,
  ) => {
    const result: DeploymentResult = { deploymentId: d.id, state, step, reason, rebootRequired };
    await save({ phase: 'done', result, activation: null });
    await dropInFlightRoots(ctx).catch(() => {});
    return result;
  };

  for (;;) {
    try {
      switch (j.phase) {
        case 'realise': {
          ctx.onStep('realise');
          await realiseClosure(ctx, d);
          await ctx.onRealised?.(d.storePath);
          const kind = await detectProfileKind(d.storePath);
          say(`kind: ${kind}`);
          // A legacy nix-darwin activate-user that cannot run as its user: refused before any change.
          const user = kind === 'nix-darwin' ? await activateUserCommand(d.storePath, ctx.env) : null;
          if (user && 'refusal' in user) throw new StepFailure('activate', user.refusal);
          const generation = (await readProfileState(ctx.profile)).storePath;
          let previous = generation;
          // What runs may not be the profile's generation (booted into an older one, a hand-run
          // `switch-to-configuration test`): a rollback returns to what ran.
          const running = await whatRuns(ctx.env, kind);
          if (previous === null && kind === 'nixos' && running) {
            // A first deployment to a NixOS profile: going back means going back to what runs.
            previous = running;
            say(`previous: ${previous} (the running system: the profile has no generation yet)`);
          } else say(`previous: ${previous ?? '(none: first deployment to this profile)'}`);
          if (running && running !== previous)
            say(`running: ${running} (not the profile's generation; a rollback returns to it)`);
          // NixOS: stay on the specialisation the machine runs, or the one the agent is told.
          let specialisation: string | null = null;
          if (kind === 'nixos') {
            const choice = await chooseSpecialisation(d.storePath, {
              forced: forcedSpecialisation(ctx.env),
              running: await runningSpecialisation(generation, running),
            });
            if ('refusal' in choice) throw new StepFailure('activate', choice.refusal);
            specialisation = choice.name;
            if (choice.note) say(choice.note);
          }
          // The new fields only when set, so an agent that predates them can still read the journal.
          await save({
            phase: 'set-profile',
            previous,
            ...(running ? { running } : {}),
            ...(specialisation ? { specialisation } : {}),
          });
          break;
        }
        case 'set-profile': {
          ctx.onStep('set-profile');
          await refuseDuringHandRunSwitch(ctx, d.storePath);
          // Recorded as switched first: a crash during nix-env must still lead to a rollback check.
          await save({ switched: true });
          if (await activateSetsProfile(d.storePath)) {
            // A legacy Home Manager activate reads the old generation from the profile, then sets it.
            say('a Home Manager generation without gen-version: its activate sets the profile');
          } else {
            const set = await setProfile(ctx, ctx.profile, d.storePath);
            if (set.code !== 0)
              throw new StepFailure(
                'set-profile',
                `nix-env --set failed: ${set.tail.at(-1) ?? `exit ${set.code}`}`,
              );
          }
          await save({ phase: 'activate', activation: null });
          break;
        }
        case 'activate': {
          ctx.onStep('activate');
          const kind = await detectProfileKind(d.storePath);
          // The profile holds the whole system; a specialisation's own switch-to-configuration runs.
          const system = await specialisationPath(d.storePath, j.specialisation);
          let run = await activate(ctx, kind, system, d.exit4, j, save, 'switch');
          if (!run.outcome.ok && run.outcome.preSwitchChecks && preSwitchPolicy(ctx.env) === 'boot') {
            say(
              `${run.outcome.reason}; installing it for the next boot instead (switch-to-configuration boot)`,
            );
            j = { ...j, activation: null };
            run = await activate(ctx, kind, system, d.exit4, j, save, 'boot');
          }
          const { outcome } = run;
          if (!outcome.ok && outcome.nextBoot) {
            // Installed as the boot default, nothing activated: the machine still runs the old
            // system, so there is nothing to check and nothing to roll back.
            reboot = true;
            say(`reboot required: ${outcome.reason}`);
            return await finish('failed', 'activate', outcome.reason);
          }
          if (!outcome.ok) throw new StepFailure('activate', outcome.reason);
          if (await activateSetsProfile(d.storePath)) {
            const failed = await profileAfterLegacyActivate(ctx, ctx.profile, d.storePath);
            if (failed) throw new StepFailure('set-profile', failed);
          }
          if (run.goal === 'boot') {
            reboot = true;
            const reason =
              'installed for the next boot (switch-to-configuration boot, after the pre-switch checks refused a live switch); reboot required; not activated, health checks not run';
            say(`reboot required: ${reason}`);
            return await finish('failed', 'activate', reason);
          }
          if (outcome.note) say(`note: ${outcome.note}`);
          if (kind === 'nixos' && run.code !== null) {
            const running = await checkRunningSystem(ctx.env, system, run.code);
            if (!running.ok) throw new StepFailure('activate', running.reason);
            if (running.note) say(`note: ${running.note}`);
          }
          if (kind === 'nixos' && (await rebootRequired(system, bootedSystemLink(ctx.env)))) {
            reboot = true;
            say('reboot required: the new kernel, initrd or kernel modules differ from the booted ones');
          }
          await save({
            phase: d.rollbackScript ? 'rollback-script' : 'health-check',
            activation: null,
            ...(reboot ? { rebootRequired: true } : {}),
          });
          break;
        }
        case 'rollback-script': {
          ctx.onStep('rollback-script');
          const script = d.rollbackScript!;
          say(`$ ${script}`);
          const r = await runLines(script, [], { env: childEnv(ctx.env), onLine: say });
          if (r.code !== 0) {
            throw new StepFailure(
              'rollback-script',
              `rollback script exited with ${r.code ?? r.signal}${r.tail.length ? `: ${r.tail.at(-1)}` : ''}`,
            );
          }
          await save({ phase: 'health-check' });
          break;
        }
        case 'health-check': {
          if (d.healthChecks.length > 0) {
            ctx.onStep('health-check');
            const health = await runHealthChecks(d.healthChecks, d.storePath, {
              env: childEnv(ctx.env),
              onLine: say,
              http: healthHttpPolicy(ctx.env),
            });
            if (!health.ok) throw new StepFailure('health-check', health.reason);
          }
          await save({ phase: 'confirm' });
          break;
        }
        case 'confirm': {
          ctx.onStep('confirm');
          say(`confirming over a new connection (timeout ${d.confirmTimeoutSeconds}s)`);
          if (!(await ctx.confirm(d.id, d.confirmTimeoutSeconds * 1000))) {
            throw new StepFailure(
              'confirm',
              `lost connectivity: could not reach the server over a new connection within ${d.confirmTimeoutSeconds}s after activating`,
            );
          }
          say('the server confirmed the deployment');
          ctx.onStep('done');
          say(`deployed ${d.storePath}`);
          return await finish('succeeded', null, null);
        }
        case 'rollback':
          return await rollBack(ctx, j, save, finish);
        case 'done':
          return j.result ?? (await finish('failed', null, 'the journal ended without a result'));
      }
    } catch (err) {
      if (err instanceof DeploymentInterrupted) throw err;
      const step = err instanceof StepFailure ? err.step : j.phase;
      const reason = err instanceof Error ? err.message : String(err);
      say(`error in ${step}: ${reason}`);
      if (!j.switched) return await finish('failed', step, reason);
      await save({ phase: 'rollback', failure: { step, reason }, activation: null });
    }
  }
}

/**
 * Activates `storePath` in a detached session (NixOS: with `goal`), or re-attaches to the one the
 * journal names. Resolves with the outcome, the goal that ran, and the exit code (null when
 * nothing ran).
 */
async function activate(
  ctx: RunDeploymentContext,
  kind: Awaited<ReturnType<typeof detectProfileKind>>,
  storePath: string,
  exit4: 'fail' | 'tolerate',
  j: AgentJournal,
  save: (patch: Partial<AgentJournal>) => Promise<void>,
  goal: 'switch' | 'boot' | 'test',
): Promise<{ outcome: ActivationOutcome; goal: 'switch' | 'boot' | 'test'; code: number | null }> {
  let record = j.activation?.storePath === storePath ? j.activation : null;
  if (record) {
    ctx.onLine(
      `re-attaching to the activation of ${storePath} started before the agent restarted${
        record.unit ? `, by its unit ${record.unit.name}` : ''
      }`,
    );
  } else {
    const plan = await activationPlan(storePath, kind, ctx.env, goal);
    if (plan.commands.length === 0) return { outcome: { ok: true, note: null }, goal, code: null };
    const stamp = `${Date.now()}-${process.pid}`;
    const base = join(ctx.stateDir, 'activations');
    await mkdir(base, { recursive: true, mode: 0o700 });
    record = {
      storePath,
      logFile: join(base, `${stamp}.log`),
      statusFile: join(base, `${stamp}.status`),
      pid: null,
      // Only when it is not the default, so an older agent can still read the journal.
      ...(goal === 'switch' ? {} : { goal }),
      // The NixOS switch runs in a transient unit where systemd can start one, as nixos-rebuild's.
      ...(kind === 'nixos' && (await systemdUsable(ctx.env))
        ? {
            unit: {
              name: activationUnitName(j.deployment.id, stamp),
              bootId: (await currentBootId()) ?? null,
            },
          }
        : {}),
    };
    // Journaled before it starts: a restarted agent looks the unit up by this name.
    await save({ activation: record });
    if (record.unit) ctx.onLine(`starting the activation in the transient unit ${record.unit.name}`);
    const pid = await startDetachedActivation(plan, record);
    if (pid !== null) {
      record = { ...record, pid };
      await save({ activation: record });
    }
  }
  const status = await waitForDetachedActivation(record, ctx.onLine, { env: ctx.env });
  return {
    outcome: interpretActivation(kind, status, exit4),
    goal: record.goal ?? 'switch',
    code: status.unknown ? null : status.code,
  };
}

/**
 * What runs before a deployment, where it can differ from the profile's generation: NixOS's
 * running system, Home Manager's current generation; undefined elsewhere or when unknown.
 */
async function whatRuns(
  env: NodeJS.ProcessEnv,
  kind: Awaited<ReturnType<typeof detectProfileKind>>,
): Promise<string | undefined> {
  if (kind === 'nixos') return await runningSystem(env);
  if (kind === 'home-manager') return await homeManagerCurrentGeneration(env);
  return undefined;
}

/**
 * Fails the deployment before the profile changes while a `nixos-rebuild` switch unit runs on
 * the machine (NixOS with systemd only): two switches at once would race over the profile and
 * the running system. The agent does not wait for it: the deployment can be run again.
 */
async function refuseDuringHandRunSwitch(ctx: RunDeploymentContext, storePath: string): Promise<void> {
  if ((await detectProfileKind(storePath)) !== 'nixos' || !(await systemdUsable(ctx.env))) return;
  let units: string[];
  try {
    units = await handRunSwitches(ctx.env);
  } catch (err) {
    throw new StepFailure('set-profile', `${(err as Error).message}; nothing was changed`);
  }
  if (units.length > 0)
    throw new StepFailure(
      'set-profile',
      `nixos-rebuild is switching this machine (unit ${units.join(', ')} is active); nothing was changed: deploy again once it has finished`,
    );
}

/**
 * Returns the machine to what ran before the deployment: the running system (or Home Manager
 * generation) the journal recorded, else the profile's previous generation. On NixOS, when what
 * ran was not the profile's generation, the profile (the boot default) goes back to where it
 * pointed and the running system is re-activated with `switch-to-configuration test`, which
 * leaves the boot default alone: both end as they were. Whether a reboot is required is computed
 * again for what runs after the rollback.
 */
async function rollBack(
  ctx: RunDeploymentContext,
  j: AgentJournal,
  save: (patch: Partial<AgentJournal>) => Promise<void>,
  finish: (
    state: DeploymentResult['state'],
    step: DeploymentStep | null,
    reason: string | null,
    rebootRequired?: boolean,
  ) => Promise<DeploymentResult>,
): Promise<DeploymentResult> {
  const say = ctx.onLine;
  const failure = j.failure ?? { step: 'activate' as const, reason: 'unknown failure' };
  const previous = j.previous;
  const running = j.running && j.running !== j.deployment.storePath ? j.running : null;
  const target = running ?? previous;
  if (target === null || target === j.deployment.storePath) {
    say(
      'ROLLBACK IMPOSSIBLE: the profile had no other generation before; the machine runs the failed configuration',
    );
    return await finish('failed', failure.step, `${failure.reason}; no previous generation to roll back to`);
  }
  ctx.onStep('rollback');
  let kind: Awaited<ReturnType<typeof detectProfileKind>>;
  try {
    kind = await detectProfileKind(target);
  } catch (err) {
    return await finish(
      'failed',
      failure.step,
      `${failure.reason}; rollback failed: ${(err as Error).message}`,
    );
  }
  const keepBoot = kind === 'nixos' && previous !== null && running !== null && running !== previous;
  const profileTarget = keepBoot && previous !== null ? previous : target;
  say(
    `rolling back to ${target} (because ${failure.step} failed: ${failure.reason})${
      keepBoot ? `; the running system, with the profile (the boot default) back at ${profileTarget}` : ''
    }`,
  );
  const current = (await readProfileState(ctx.profile)).storePath;
  if (current !== previous && current !== j.deployment.storePath) {
    // Someone switched the profile since the agent set it (a hand-run nixos-rebuild): theirs wins.
    say(
      `NOT ROLLING BACK: the profile ${ctx.profile} now points to ${current ?? '(nothing)'}, not where the agent set it`,
    );
    return await finish(
      'failed',
      failure.step,
      `${failure.reason}; not rolled back: the profile ${ctx.profile} now points to ${
        current ?? '(nothing)'
      }, not to ${j.deployment.storePath} where the agent set it (someone switched this machine meanwhile, such as with nixos-rebuild); left it as it is`,
    );
  }
  const legacy = await activateSetsProfile(target);
  if (current !== profileTarget && !legacy) {
    const set = await setProfile(ctx, ctx.profile, profileTarget);
    if (set.code !== 0) {
      say('ROLLBACK FAILED: cannot set the profile back');
      return await finish(
        'failed',
        failure.step,
        `${failure.reason}; rollback failed: nix-env --set exited with ${set.code}`,
      );
    }
  }
  // Re-activating the old generation must not be cut short by the exit-4 policy.
  const { outcome, code } = await activate(
    ctx,
    kind,
    target,
    'tolerate',
    j,
    save,
    keepBoot ? 'test' : 'switch',
  );
  const checked =
    outcome.ok && kind === 'nixos' && code !== null
      ? await checkRunningSystem(ctx.env, target, code)
      : outcome;
  if (!checked.ok) {
    say(`ROLLBACK FAILED: ${checked.reason}`);
    return await finish('failed', failure.step, `${failure.reason}; rollback failed: ${checked.reason}`);
  }
  if (keepBoot) {
    // The failed switch may have made itself the bootloader's default: make it the profile's
    // generation again, as it was before.
    const boot = await activate(ctx, kind, profileTarget, 'tolerate', j, save, 'boot');
    if (!boot.outcome.ok) {
      say(`ROLLBACK FAILED: ${boot.outcome.reason}`);
      return await finish(
        'failed',
        failure.step,
        `${failure.reason}; rollback failed: the running system is back, but switch-to-configuration boot of ${profileTarget} failed: ${boot.outcome.reason}`,
      );
    }
  }
  const unset = legacy ? await profileAfterLegacyActivate(ctx, ctx.profile, target) : null;
  if (unset) {
    say(`ROLLBACK FAILED: ${unset}`);
    return await finish('failed', failure.step, `${failure.reason}; rollback failed: ${unset}`);
  }
  say(`rolled back to ${target}`);
  // What runs now decides, not what the failed configuration would have needed.
  const reboot = kind === 'nixos' && (await rebootRequired(target, bootedSystemLink(ctx.env)));
  if (reboot) say('reboot required: the kernel, initrd or kernel modules differ from the booted ones');
  return await finish('rolled-back', failure.step, failure.reason, reboot);
}
