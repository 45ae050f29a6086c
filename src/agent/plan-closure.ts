import { randomBytes } from 'node:crypto';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { runLines } from '../lib/run-lines.ts';
import {
  type DryActivation,
  MAX_PLAN_PATHS,
  type MachinePlan,
  type ProfileKind,
  type ServerMessage,
} from '../protocol/agent-protocol.ts';
import { activationPlan } from './activate-profile.ts';
import { dryRunRealise, freeStoreBytes, realise, withNetrc } from './nix-commands.ts';
import { detectProfileKind } from './profile-kind.ts';
import { readProfileState } from './profile-state.ts';
import type { RealiseContext } from './realise-closure.ts';
import { rebootRequired } from './reboot-required.ts';
import { bootedSystemLink, runningSystem } from './running-system.ts';
import {
  chooseSpecialisation,
  forcedSpecialisation,
  runningSpecialisation,
  specialisationPath,
} from './specialisation.ts';

/** What planning needs beyond realising: the profile a deployment would switch. */
export interface PlanContext extends RealiseContext {
  readonly profile: string;
}

type PlanRequest = Extract<ServerMessage, { type: 'plan' }>;

/**
 * What deploying a store path would do on this machine, changing nothing it keeps: the paths
 * the store lacks (as `nix-store --realise --dry-run` decides, so exactly what the deployment
 * downloads), the free space of the store's disk and, with `dryActivate`, what NixOS's
 * `switch-to-configuration dry-activate` says. For that the closure is realised under a GC root
 * of its own in the state dir, removed afterwards; the profile is never touched.
 */
export async function planClosure(ctx: PlanContext, request: PlanRequest): Promise<MachinePlan> {
  const paths = request.rollbackScript ? [request.storePath, request.rollbackScript] : [request.storePath];
  const lists = await withNetrc(ctx, ctx.caches, ctx.token, (netrc) =>
    dryRunRealise(ctx, paths, ctx.caches, netrc),
  );
  if (lists.code !== 0) {
    throw new Error(`nix-store --realise --dry-run exited with ${lists.code}: ${lists.tail.at(-1) ?? ''}`);
  }
  const truncated = lists.fetch.length > MAX_PLAN_PATHS || lists.unavailable.length > MAX_PLAN_PATHS;
  const plan = {
    fetch: lists.fetch.sort().slice(0, MAX_PLAN_PATHS),
    build: lists.unavailable.sort().slice(0, MAX_PLAN_PATHS),
    truncated,
    freeBytes: await freeStoreBytes(),
  };
  if (!request.dryActivate) {
    // The kind is known only when the path is here already.
    const here = !lists.fetch.includes(request.storePath) && !lists.unavailable.includes(request.storePath);
    const kind = here ? await detectProfileKind(request.storePath).catch(() => null) : null;
    return { ...plan, kind, dryActivate: null };
  }
  if (plan.build.length > 0) {
    const dryActivate: DryActivation = {
      status: 'failed',
      reason: `cannot fetch the closure to dry-activate it: no cache has ${plan.build[0]}`,
    };
    return { ...plan, kind: null, dryActivate };
  }
  const { kind, dryActivate } = await fetchAndDryActivate(ctx, request.storePath);
  return { ...plan, kind, dryActivate };
}

/** Realises `storePath` under a temporary GC root, dry-activates it, and removes the root. */
async function fetchAndDryActivate(
  ctx: PlanContext,
  storePath: string,
): Promise<{ kind: ProfileKind | null; dryActivate: DryActivation }> {
  const rootName = `plan-${randomBytes(6).toString('hex')}`;
  const quiet = { ...ctx, onLine: () => {} };
  try {
    const r = await withNetrc(ctx, ctx.caches, ctx.token, (netrc) =>
      realise(quiet, [storePath], ctx.caches, netrc, rootName),
    );
    if (r.code !== 0)
      return {
        kind: null,
        dryActivate: {
          status: 'failed',
          reason: `cannot fetch ${storePath}: ${r.tail.at(-1) ?? `exit ${r.code}`}`,
        },
      };
    let kind: ProfileKind;
    try {
      kind = await detectProfileKind(storePath);
    } catch (err) {
      return { kind: null, dryActivate: { status: 'failed', reason: (err as Error).message } };
    }
    if (kind !== 'nixos') {
      const what = { 'nix-darwin': 'nix-darwin', 'home-manager': 'Home Manager', plain: 'a plain profile' }[
        kind
      ];
      return {
        kind,
        dryActivate: { status: 'unsupported', reason: `no dry-activate: ${what} has none` },
      };
    }
    return { kind, dryActivate: await dryActivate(ctx, storePath) };
  } finally {
    await rm(join(ctx.stateDir, 'gcroots', rootName), { force: true });
  }
}

/** The units lists of `switch-to-configuration dry-activate`, by the words it prints them with. */
const UNIT_LINES: ReadonlyArray<[RegExp, 'stop' | 'restart' | 'start' | 'reload']> = [
  [/^would stop the following units: (.*)$/, 'stop'],
  [/^would restart the following units: (.*)$/, 'restart'],
  [/^would start the following units: (.*)$/, 'start'],
  [/^would reload the following units: (.*)$/, 'reload'],
];

/** Runs NixOS's dry-activate for the specialisation a switch would take, and reads what it says. */
async function dryActivate(ctx: PlanContext, storePath: string): Promise<DryActivation> {
  const generation = (await readProfileState(ctx.profile).catch(() => null))?.storePath ?? null;
  const choice = await chooseSpecialisation(storePath, {
    forced: forcedSpecialisation(ctx.env),
    running: await runningSpecialisation(generation, await runningSystem(ctx.env)),
  });
  if ('refusal' in choice) return { status: 'failed', reason: choice.refusal };
  const system = await specialisationPath(storePath, choice.name);
  const { commands, env } = await activationPlan(system, 'nixos', ctx.env, 'switch');
  const argv = commands[0]!.argv;
  const units = {
    stop: [] as string[],
    restart: [] as string[],
    start: [] as string[],
    reload: [] as string[],
  };
  const notes: string[] = [];
  const r = await runLines(argv[0]!, ['dry-activate'], {
    env,
    ...(ctx.signal ? { signal: ctx.signal } : {}),
    onLine: (line) => {
      for (const [re, key] of UNIT_LINES) {
        const m = re.exec(line.trim());
        if (m) {
          for (const unit of m[1]!.split(',').map((u) => u.trim()))
            if (unit && !units[key].includes(unit)) units[key].push(unit);
          return;
        }
      }
      if (line.trim() && notes.length < 200) notes.push(line.slice(0, 4096));
    },
  });
  // 100: the init system changed; only a reboot activates the new one.
  if (r.code !== 0 && r.code !== 100)
    return {
      status: 'failed',
      reason: `switch-to-configuration dry-activate exited with ${r.code}${r.tail.at(-1) ? `: ${r.tail.at(-1)}` : ''}`,
    };
  const reboot = r.code === 100 || (await rebootRequired(system, bootedSystemLink(ctx.env)));
  return { status: 'done', ...units, rebootRequired: reboot, notes };
}
