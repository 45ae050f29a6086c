import type { Context, Hono } from 'hono';
import { z } from 'zod';
import { CairnError, isCairnError } from '../../lib/cairn-error.ts';
import { isOpenState } from '../../protocol/deployment-state.ts';
import { parseOrThrow } from '../../protocol/parse-or-throw.ts';
import { idParamSchema, idPathSchema } from '../../protocol/request-params.ts';
import { isFinalRolloutState } from '../../protocol/rollout-policy.ts';
import type { DeploymentRow } from '../db/deployment-repository.ts';
import { agentsDenied, type SteerDeps, steerRollout } from '../deployments/steer-rollout.ts';
import type { EventBus } from '../events/event-bus.ts';
import { clientAddress } from '../http/client-address.ts';
import type { RolloutOperation } from '../rollouts/operate-rollout.ts';
import type { RolloutEngine } from '../rollouts/rollout-engine.ts';
import { stagedStatus } from '../rollouts/staged-status.ts';
import type { DashboardQueries } from './dashboard-queries.ts';
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
    const html = rolloutPage({
      session: s,
      rollout,
      deployments,
      now: deps.now(),
      staged,
      canOperate:
        deployments.length > 0 &&
        agentsDenied(
          s.principal,
          deployments.map((d) => d.agent_name),
        ).length === 0,
      live: staged !== null && !isOver(staged.state, rollout.revert_state, deployments),
      error: options.error,
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
