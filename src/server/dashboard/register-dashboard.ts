import type { Hono } from 'hono';
import type { Kysely } from 'kysely';
import type { Logger } from 'pino';
import type { Authenticator } from '../auth/authenticator.ts';
import type { CacheCollector } from '../cache/cache-collector.ts';
import type { ClosureRepository } from '../closures/closure-repository.ts';
import type { PlanAsker } from '../closures/plan-rollout.ts';
import type { CacheGcRepository } from '../db/cache-gc-repository.ts';
import type { Database } from '../db/database-schema.ts';
import type { WebhookRepository } from '../db/webhook-repository.ts';
import type { RollbackDeps } from '../deployments/rollback-agent.ts';
import type { RolloutEngine } from '../rollouts/rollout-engine.ts';
import { DashboardQueries } from './dashboard-queries.ts';
import { dashboardRoutes } from './dashboard-routes.ts';
import { SessionStore } from './session-store.ts';

/** Adds the dashboard (at `/`) to the app. */
export function registerDashboard(
  app: Hono,
  deps: RollbackDeps & {
    flushLogs: () => Promise<void>;
    db: Kysely<Database>;
    auth: Authenticator;
    log: Logger;
    closures: ClosureRepository;
    rollouts: RolloutEngine;
    webhooks: WebhookRepository;
    collector: CacheCollector;
    gc: CacheGcRepository;
    /** Asks agents' machines for their part of a plan (the rollout page's plan). */
    planAsker?: PlanAsker;
  },
): void {
  const closures = deps.closures;
  app.route(
    '/',
    dashboardRoutes({
      ...deps,
      sessions: new SessionStore(deps.db, deps.now),
      queries: new DashboardQueries(deps.db),
      closures,
    }),
  );
}
