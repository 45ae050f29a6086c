import type { Context, Hono } from 'hono';
import { z } from 'zod';
import { CairnError, isCairnError } from '../../lib/cairn-error.ts';
import { isOpenState } from '../../protocol/deployment-state.ts';
import { parseOrThrow } from '../../protocol/parse-or-throw.ts';
import { idParamSchema, idPathSchema } from '../../protocol/request-params.ts';
import { isFinalRolloutState } from '../../protocol/rollout-policy.ts';
import type { ClosureRepository } from '../closures/closure-repository.ts';
import {
  DEFAULT_DRY_ACTIVATE_TIMEOUT_SECONDS,
  DEFAULT_PLAN_TIMEOUT_SECONDS,
  type PlanAsker,
  planRollout,
} from '../closures/plan-rollout.ts';
import type { AgentRepository } from '../db/agent-repository.ts';
import type { DeploymentRow } from '../db/deployment-repository.ts';
import { agentsDenied, type SteerDeps, steerRollout } from '../deployments/steer-rollout.ts';
import type { EventBus } from '../events/event-bus.ts';
import { clientAddress } from '../http/client-address.ts';
import type { RolloutOperation } from '../rollouts/operate-rollout.ts';
import type { RolloutEngine } from '../rollouts/rollout-engine.ts';
import { stagedStatus } from '../rollouts/staged-status.ts';
import type { DashboardQueries } from './dashboard-queries.ts';
import { planPage } from './plan-page.ts';
import { rolloutChanges } from './rollout-changes.ts';
import { ROLLOUT_FORM_OPS } from './rollout-controls.ts';
import { rolloutPage } from './rollout-page.ts';
import { sendPage } from './send-page.ts';
import type { Session } from './session-store.ts';
import { checkedForm } from './sign-in-routes.ts';

/** Wraps a page's renderer: signed-in browsers only, errors shown as the error page. */
export type PageRoute = (
  render: (c: Context, s: Session, started: number) => Promise<Response>,
) => (c: Context) => Promise<Response>;

/** What the rollout pages need. */
export interface RolloutPagesDeps extends SteerDeps {
  readonly rollouts: RolloutEngine;
  readonly queries: DashboardQueries;
  readonly bus: EventBus;
  readonly agents: AgentRepository;
  readonly closures: ClosureRepository;
  /** Asks connected agents' machines for their part of a plan; without it, plans are estimates. */
  readonly planAsker?: PlanAsker | undefined;
}

/** Most agents the plan page asks at once: a page to read, not a fleet report (`deploy plan` is). */
export const MAX_PLAN_PAGE_AGENTS = 100;
const planFormSchema = z.object({ dryActivate: z.literal('true').optional() }).strict();

/** A deployment its agent has not been let to see yet (its batch has not opened). */
const notSent = (d: DeploymentRow) => d.state === 'pending' && d.dispatched_at === null;

/**
 * The deployments of a rollout a plan is about: those whose batch has not opened yet, of the
 * first such batch (all of them in a rollout that is not staged), with how people read that.
 */
function nextToOpen(
  deployments: readonly DeploymentRow[],
  batches: number | undefined,
): { planned: DeploymentRow[]; scope: string } {
  const waiting = deployments.filter(notSent);
  const batch = Math.min(...waiting.map((d) => d.batch ?? -1));
  const planned = waiting
    .filter((d) => (d.batch ?? -1) === batch)
    .sort((a, b) => (a.agent_name < b.agent_name ? -1 : 1));
  const scope =
    batch >= 0 && batches !== undefined
      ? `batch ${batch + 1} of ${batches} (${planned.length} agent(s), not opened yet)`
      : `the ${planned.length} deployment(s) not yet sent to their agents`;
  return { planned, scope };
}

const opPathSchema = z.object({ id: idParamSchema, op: z.enum(ROLLOUT_FORM_OPS) });
/** Each form's fields besides `_csrf`: unknown ones are refused, as in the API's bodies. */
const opFormSchemas = {
  pause: z.object({}).strict(),
  resume: z.object({}).strict(),
  promote: z.object({ full: z.literal('true').optional() }).strict(),
  abort: z.object({ revert: z.literal('true').optional() }).strict(),
};

/** True once a staged rollout will not change again: over, reverted, and no deployment open. */
function isOver(state: string, revertState: string | null, deployments: readonly DeploymentRow[]): boolean {
  return (
    isFinalRolloutState(state) && revertState !== 'pending' && !deployments.some((d) => isOpenState(d.state))
  );
}

/**
 * `/rollouts/:id` (the page, followed live over `/rollouts/:id/events` while a staged rollout
 * runs) and the forms that steer a staged rollout, `POST /rollouts/:id/pause|resume|promote|abort`,
 * which go through {@link steerRollout} as the API's do, audited the same way.
 */
export function registerRolloutPages(app: Hono, deps: RolloutPagesDeps, page: PageRoute): void {
  const render = async (
    c: Context,
    s: Session,
    id: number,
    options: { started?: number; status?: number; error?: string } = {},
  ) => {
    const rollout = await deps.queries.rollout(s.principal.workspaceId, id);
    if (!rollout) throw new CairnError('NOT_FOUND', `Cannot find rollout '${id}'`);
    const deployments = await deps.deployments.byRollout(s.principal.workspaceId, id);
    const staged = await stagedStatus(deps.rollouts.store, id);
    // Steering and planning are for a principal that may deploy to every agent of the rollout.
    const mayOperate =
      deployments.length > 0 &&
      agentsDenied(
        s.principal,
        deployments.map((d) => d.agent_name),
      ).length === 0;
    const html = rolloutPage({
      session: s,
      rollout,
      deployments,
      now: deps.now(),
      staged,
      canOperate: mayOperate,
      live: staged !== null && !isOver(staged.state, rollout.revert_state, deployments),
      error: options.error,
      canPlan:
        mayOperate && staged !== null && !isFinalRolloutState(staged.state) && deployments.some(notSent),
    });
    return sendPage(c, html, {
      ...(options.started === undefined ? {} : { started: options.started }),
      ...(options.status === undefined ? {} : { status: options.status }),
    });
  };

  app.get(
    '/rollouts/:id',
    page(async (c, s, started) => {
      const { id } = parseOrThrow(idPathSchema, c.req.param(), { action: 'find the rollout' });
      return await render(c, s, id, { started });
    }),
  );

  app.get(
    '/rollouts/:id/events',
    page(async (c, s) => {
      const { id } = parseOrThrow(idPathSchema, c.req.param(), { action: 'follow the rollout' });
      const { workspaceId } = s.principal;
      if (!(await deps.queries.rollout(workspaceId, id))) {
        throw new CairnError('NOT_FOUND', `Cannot find rollout '${id}'`);
      }
      return rolloutChanges(
        c,
        {
          bus: deps.bus,
          isOver: async () => {
            const row = await deps.rollouts.store.row(id);
            // A rollout that deployed at once has no status to follow: its page polls instead.
            if (!row || row.state === null) return true;
            if (!isFinalRolloutState(row.state)) return false;
            return isOver(row.state, row.revert_state, await deps.deployments.byRollout(workspaceId, id));
          },
        },
        { rolloutId: id, tokenId: s.principal.tokenId },
      );
    }),
  );

  // Before `/rollouts/:id/:op`, which would take `plan` for an operation. A POST with the
  // session's CSRF token, though it changes nothing: with dry-activate the machines download.
  app.post(
    '/rollouts/:id/plan',
    page(async (c, s) => {
      const { _csrf, ...fields } = await checkedForm(c, s);
      const { id } = parseOrThrow(idPathSchema, c.req.param(), { action: 'plan the rollout' });
      const form = parseOrThrow(planFormSchema, fields, { action: 'plan the rollout' });
      const { workspaceId } = s.principal;
      if (!(await deps.queries.rollout(workspaceId, id))) {
        throw new CairnError('NOT_FOUND', `Cannot find rollout '${id}'`);
      }
      const deployments = await deps.deployments.byRollout(workspaceId, id);
      const staged = await stagedStatus(deps.rollouts.store, id);
      const { planned, scope } = nextToOpen(deployments, staged?.batches.length);
      if (planned.length === 0) {
        return await render(c, s, id, {
          status: 409,
          error: `Cannot plan rollout #${id}: every deployment of it was sent to its agent already; the plan is for those not yet sent`,
        });
      }
      const shown = planned.slice(0, MAX_PLAN_PAGE_AGENTS);
      // deploy.json names rollback scripts by system; each deployment holds its agent's.
      const systems = new Map(
        (
          await deps.agents.byNames(
            workspaceId,
            shown.map((d) => d.agent_name),
          )
        ).map((a) => [a.name, a.system]),
      );
      const rollbackScript: Record<string, string> = {};
      for (const d of shown) {
        const system = systems.get(d.agent_name);
        if (d.rollback_script !== null && system) rollbackScript[system] = d.rollback_script;
      }
      const dryActivate = form.dryActivate === 'true';
      const seconds = dryActivate ? DEFAULT_DRY_ACTIVATE_TIMEOUT_SECONDS : DEFAULT_PLAN_TIMEOUT_SECONDS;
      const plan = await planRollout(deps, {
        principal: s.principal,
        workspaceId,
        deploy: {
          agents: Object.fromEntries(shown.map((d) => [d.agent_name, d.store_path])),
          ...(Object.keys(rollbackScript).length > 0 ? { rollbackScript } : {}),
        },
        ...(deps.planAsker
          ? { machines: { asker: deps.planAsker, dryActivate, timeoutMs: seconds * 1000 } }
          : {}),
      });
      return sendPage(
        c,
        planPage({
          session: s,
          rolloutId: id,
          scope,
          plan,
          dryActivate,
          leftOut: planned.length - shown.length,
        }),
      );
    }),
  );

  app.post(
    '/rollouts/:id/:op',
    page(async (c, s) => {
      const { _csrf, ...fields } = await checkedForm(c, s);
      const { id, op } = parseOrThrow(opPathSchema, c.req.param(), { action: 'steer the rollout' });
      const form = parseOrThrow(opFormSchemas[op], fields, { action: `${op} the rollout` });
      const operation: RolloutOperation =
        op === 'promote'
          ? { op, full: 'full' in form && form.full === 'true' }
          : op === 'abort'
            ? { op, revert: 'revert' in form && form.revert === 'true' }
            : { op };
      try {
        await steerRollout(deps, {
          principal: s.principal,
          workspaceId: s.principal.workspaceId,
          rolloutId: id,
          operation,
          address: clientAddress(c),
        });
      } catch (err) {
        // The state moved on since the page was drawn: show it again, saying why.
        if (isCairnError(err) && err.code === 'CONFLICT') {
          return await render(c, s, id, { status: 409, error: err.message });
        }
        throw err;
      }
      return c.redirect(`/rollouts/${id}`, 303);
    }),
  );
}
