import { type Context, Hono } from 'hono';
import type { Logger } from 'pino';
import { z } from 'zod';
import { CairnError, isCairnError } from '../../lib/cairn-error.ts';
import { parseBytes } from '../../protocol/byte-size.ts';
import { MAX_RETENTION_SECONDS } from '../../protocol/cache-gc-schemas.ts';
import { durationMs } from '../../protocol/duration.ts';
import { parseOrThrow } from '../../protocol/parse-or-throw.ts';
import { idParamSchema, idPathSchema, seqParamSchema } from '../../protocol/request-params.ts';
import type { Authenticator } from '../auth/authenticator.ts';
import { assertAdmin, canActivate, canViewFleet } from '../auth/permissions.ts';
import { CacheCollector } from '../cache/cache-collector.ts';
import type { ClosureRepository } from '../closures/closure-repository.ts';
import { diffDeployments } from '../closures/deployment-diff.ts';
import type { PlanAsker } from '../closures/plan-rollout.ts';
import type { CacheGcRepository } from '../db/cache-gc-repository.ts';
import type { DeploymentRow } from '../db/deployment-repository.ts';
import type { WebhookRepository } from '../db/webhook-repository.ts';
import { type RollbackDeps, rollbackAgent } from '../deployments/rollback-agent.ts';
import type { EventBus } from '../events/event-bus.ts';
import { clientAddress } from '../http/client-address.ts';
import type { RolloutEngine } from '../rollouts/rollout-engine.ts';
import { agentPage } from './agent-page.ts';
import { cachePage, cachesPage } from './caches-page.ts';
import type { DashboardQueries } from './dashboard-queries.ts';
import { deploymentEvents } from './deployment-events.ts';
import { deploymentPage } from './deployment-page.ts';
import { diffPage } from './diff-page.ts';
import { errorPage } from './error-page.ts';
import { FLEET_STATUSES, filterFleet, fleetPage } from './fleet-page.ts';
import { type PageRoute, registerRolloutPages } from './rollout-routes.ts';
import { secureHeaders, sendPage } from './send-page.ts';
import type { Session, SessionStore } from './session-store.ts';
import { checkedForm, registerSignInRoutes, sessionOf } from './sign-in-routes.ts';
import { APP_CSS, APP_JS } from './static-assets.ts';
import { webhooksPage } from './webhooks-page.ts';

/** What the dashboard needs. */
export interface DashboardDeps extends RollbackDeps {
  readonly auth: Authenticator;
  /** Writes buffered deployment log lines, so a reader of the database sees all sent so far. */
  readonly flushLogs: () => Promise<void>;
  readonly bus: EventBus;
  readonly sessions: SessionStore;
  readonly queries: DashboardQueries;
  readonly closures: ClosureRepository;
  readonly log: Logger;
  /** Runs staged rollouts: their status, and the operations the rollout page's buttons ask for. */
  readonly rollouts: RolloutEngine;
  /** Webhook endpoints and their deliveries, for the webhooks page. */
  readonly webhooks: WebhookRepository;
  /** The caches' collector and its records, for the caches pages. */
  readonly collector: CacheCollector;
  readonly gc: CacheGcRepository;
  /** Asks agents' machines for their part of a plan (the rollout page's plan). */
  readonly planAsker?: PlanAsker | undefined;
}

const rollbackFormSchema = z.object({ to: idParamSchema.optional() });
const afterSchema = z.object({ after: seqParamSchema });
const diffQuerySchema = z.object({ from: idParamSchema.optional(), to: idParamSchema });

/** Log lines shown on a deployment page; the API serves the rest. */
const MAX_LOG_LINES = 10_000;

/**
 * The dashboard: server-rendered pages (hono/html escapes every value), signed in with a token
 * exchanged for a session cookie (HttpOnly, SameSite=Strict, Secure over TLS), a CSRF token in
 * every form, a strict Content-Security-Policy, and Server-Sent Events for the live parts.
 */
export function dashboardRoutes(deps: DashboardDeps): Hono {
  const app = new Hono();

  app.get('/static/app.js', (c) => {
    secureHeaders(c);
    c.header('Cache-Control', 'public, max-age=300');
    return c.body(APP_JS, 200, { 'Content-Type': 'text/javascript; charset=utf-8' });
  });
  app.get('/static/app.css', (c) => {
    secureHeaders(c);
    c.header('Cache-Control', 'public, max-age=300');
    return c.body(APP_CSS, 200, { 'Content-Type': 'text/css; charset=utf-8' });
  });

  registerSignInRoutes(app, deps);

  /** A page for signed-in browsers: others go to the sign-in form and come back after. */
  const page: PageRoute =
    (render: (c: Context, s: Session, started: number) => Promise<Response>) => async (c: Context) => {
      const started = performance.now();
      const s = await sessionOf(deps.sessions, c);
      if (!s || !canViewFleet(s.principal)) {
        if (c.req.method !== 'GET') return c.redirect('/login', 303);
        const next = new URL(c.req.url);
        return c.redirect(`/login?next=${encodeURIComponent(next.pathname + next.search)}`, 303);
      }
      try {
        return await render(c, s, started);
      } catch (err) {
        if (!isCairnError(err) || err.status >= 500) {
          deps.log.error({ err }, 'cannot render a dashboard page');
          return sendPage(
            c,
            errorPage({ session: s, title: 'Error', message: 'Internal error (see the server log)' }),
            { status: 500 },
          );
        }
        const title =
          err.status === 404 ? 'Not found' : err.status === 403 ? 'Not allowed' : 'Cannot do that';
        return sendPage(c, errorPage({ session: s, title, message: err.message }), { status: err.status });
      }
    };

  const deploymentOr404 = async (s: Session, id: number): Promise<DeploymentRow> => {
    const d = await deps.deployments.byId(s.principal.workspaceId, id);
    if (!d) throw new CairnError('NOT_FOUND', `Cannot find deployment '${id}'`);
    return d;
  };
  /** The deployment the path names (`/deployments/:id`). */
  const deploymentOfPath = (c: Context, s: Session) =>
    deploymentOr404(s, parseOrThrow(idPathSchema, c.req.param(), { action: 'find the deployment' }).id);

  app.get(
    '/',
    page(async (c, s, started) => {
      const all = await deps.queries.fleet(s.principal.workspaceId);
      const q = (c.req.query('q') ?? '').slice(0, 100);
      const status = FLEET_STATUSES.includes(c.req.query('status') ?? '') ? c.req.query('status')! : '';
      const rows = filterFleet(all, q, status);
      return sendPage(c, fleetPage({ session: s, rows, total: all.length, q, status, now: deps.now() }), {
        started,
      });
    }),
  );

  app.get(
    '/agents/:name',
    page(async (c, s, started) => {
      const name = c.req.param('name')!;
      const agent = await deps.agents.byName(s.principal.workspaceId, name);
      if (!agent) throw new CairnError('NOT_FOUND', `Cannot find agent '${name}'`);
      const history = await deps.queries.history(agent.id, 100);
      const closureSize = agent.store_path
        ? await deps.closures.sizeFor(agent.id, agent.store_path)
        : undefined;
      return sendPage(
        c,
        agentPage({
          session: s,
          agent,
          tags: (await deps.agents.tagsOf([agent.id])).get(agent.id) ?? [],
          history,
          closureSize: closureSize ?? null,
          canRollback: canActivate(s.principal, agent.name),
          now: deps.now(),
        }),
        { started },
      );
    }),
  );

  app.post(
    '/agents/:name/rollback',
    page(async (c, s) => {
      const form = await checkedForm(c, s);
      const { to } = parseOrThrow(
        rollbackFormSchema,
        { to: form.to === '' ? undefined : form.to },
        { action: 'roll back' },
      );
      const { deployments } = await rollbackAgent(deps, {
        principal: s.principal,
        workspaceId: s.principal.workspaceId,
        agent: c.req.param('name')!,
        to,
        address: clientAddress(c),
      });
      const created = deployments[0];
      return c.redirect(created ? `/deployments/${created.id}` : '/', 303);
    }),
  );

  app.get(
    '/deployments/:id',
    page(async (c, s, started) => {
      const d = await deploymentOfPath(c, s);
      const lines = await deps.deployments.logs(d.id, 0, MAX_LOG_LINES);
      const previous = await deps.queries.previousSucceeded(d.agent_id, d.id);
      const diff = await diffDeployments(deps.closures, previous, d);
      return sendPage(
        c,
        deploymentPage({
          session: s,
          deployment: d,
          lines,
          previous,
          diff,
          canRollback: canActivate(s.principal, d.agent_name),
        }),
        { started },
      );
    }),
  );

  app.get(
    '/deployments/:id/events',
    page(async (c, s) => {
      const d = await deploymentOfPath(c, s);
      // A reconnecting EventSource says where it was in Last-Event-ID; a first one, in ?after=.
      const { after } = parseOrThrow(
        afterSchema,
        { after: c.req.header('last-event-id') ?? c.req.query('after') },
        { action: 'follow the deployment' },
      );
      return deploymentEvents(c, deps, {
        workspaceId: d.workspace_id,
        id: d.id,
        after,
        tokenId: s.principal.tokenId,
      });
    }),
  );

  registerRolloutPages(app, deps, page);

  app.get(
    '/webhooks',
    page(async (c, s, started) => {
      assertAdmin(s.principal, 'see the webhooks');
      const { workspaceId } = s.principal;
      return sendPage(
        c,
        webhooksPage({
          session: s,
          endpoints: await deps.webhooks.list(workspaceId),
          deliveries: await deps.webhooks.deliveries(workspaceId, { limit: 100 }),
          now: deps.now(),
        }),
        { started },
      );
    }),
  );

  app.get(
    '/caches',
    page(async (c, s, started) => {
      assertAdmin(s.principal, 'see the caches');
      const rows = await deps.caches.list(s.principal.workspaceId);
      const stats = await deps.caches.stats(rows.map((r) => r.id));
      const caches = await Promise.all(
        rows.map(async (row) => ({
          row,
          stats: stats.get(row.id),
          last: (await deps.gc.runs(row.id, 1))[0],
          retention: CacheCollector.retentionOf(row),
        })),
      );
      return sendPage(c, cachesPage({ session: s, caches, now: deps.now() }), { started });
    }),
  );

  const adminCache = async (c: Context, s: Session, action: string) => {
    assertAdmin(s.principal, action);
    const name = c.req.param('name') ?? '';
    const row = await deps.caches.byName(name);
    if (!row || row.workspace_id !== s.principal.workspaceId) {
      throw new CairnError('NOT_FOUND', `Cannot ${action}: no cache named '${name}' in this workspace`);
    }
    return row;
  };
  const showCache = async (c: Context, s: Session, started: number, error?: string) => {
    const row = await adminCache(c, s, 'see the cache');
    return sendPage(
      c,
      cachePage({
        session: s,
        row,
        stats: (await deps.caches.stats([row.id])).get(row.id),
        plan: await deps.collector.collect(row, { dryRun: true, trigger: 'manual' }),
        runs: await deps.gc.runs(row.id, 20),
        pins: (await deps.gc.pins(row.id)).length,
        now: deps.now(),
        error,
      }),
      { started, ...(error ? { status: 400 } : {}) },
    );
  };

  app.get(
    '/caches/:name',
    page(async (c, s, started) => showCache(c, s, started)),
  );

  app.post(
    '/caches/:name/policy',
    page(async (c, s, started) => {
      const row = await adminCache(c, s, 'change the cache');
      const form = await checkedForm(c, s);
      const retentionText = String(form.retention ?? '').trim();
      const quotaText = String(form.quota ?? '').trim();
      const retentionMs = retentionText === '' ? null : durationMs(retentionText);
      const quotaBytes = quotaText === '' || quotaText === 'none' ? null : parseBytes(quotaText);
      if (
        retentionMs === undefined ||
        (retentionMs !== null && (retentionMs < 1000 || retentionMs / 1000 > MAX_RETENTION_SECONDS))
      ) {
        return showCache(
          c,
          s,
          started,
          `Cannot save: the retention must be a duration such as 28d or 12h, from 1s to ten years (${retentionText.slice(0, 40)})`,
        );
      }
      if (quotaBytes === undefined || (quotaBytes !== null && quotaBytes < 1)) {
        return showCache(
          c,
          s,
          started,
          `Cannot save: the quota must be a size such as 500MiB or 50GiB, or empty for none (${quotaText.slice(0, 40)})`,
        );
      }
      const policy = {
        retentionSeconds: retentionMs === null ? null : Math.round(retentionMs / 1000),
        quotaBytes,
      };
      await deps.gc.setPolicy(row.id, policy);
      await deps.audit.record(
        {
          workspaceId: s.principal.workspaceId,
          tokenId: s.principal.tokenId,
          tokenName: s.principal.tokenName,
          address: clientAddress(c),
          action: 'cache.policy',
          target: row.name,
          detail: policy,
        },
        deps.now(),
      );
      return c.redirect(`/caches/${row.name}`, 303);
    }),
  );

  app.post(
    '/caches/:name/gc',
    page(async (c, s) => {
      const row = await adminCache(c, s, 'collect the cache');
      await checkedForm(c, s);
      const result = await deps.collector.collect(row, { dryRun: false, trigger: 'manual' });
      await deps.audit.record(
        {
          workspaceId: s.principal.workspaceId,
          tokenId: s.principal.tokenId,
          tokenName: s.principal.tokenName,
          address: clientAddress(c),
          action: 'cache.gc',
          target: row.name,
          detail: {
            paths: result.paths.length,
            narFiles: result.narFiles.length,
            bytesFreed: result.bytesFreed,
          },
        },
        deps.now(),
      );
      return c.redirect(`/caches/${row.name}`, 303);
    }),
  );

  app.get(
    '/diff',
    page(async (c, s, started) => {
      const fromText = c.req.query('from');
      const ids = parseOrThrow(
        diffQuerySchema,
        { from: fromText === '' ? undefined : fromText, to: c.req.query('to') },
        { action: 'diff deployments' },
      );
      const to = await deploymentOr404(s, ids.to);
      const from = ids.from === undefined ? undefined : await deploymentOr404(s, ids.from);
      const diff = await diffDeployments(deps.closures, from, to);
      return sendPage(c, diffPage({ session: s, diff }), { started });
    }),
  );

  return app;
}
