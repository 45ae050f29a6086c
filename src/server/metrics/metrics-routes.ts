import type { IncomingMessage, ServerResponse } from 'node:http';
import { Hono } from 'hono';
import { CairnError } from '../../lib/cairn-error.ts';
import type { Authenticator } from '../auth/authenticator.ts';
import { canReadMetrics } from '../auth/permissions.ts';
import { clientAddress } from '../http/client-address.ts';
import { type ErrorLogger, errorResponse } from '../http/error-response.ts';
import type { ServerMetrics } from './server-metrics.ts';

/**
 * `GET /metrics` on the main listener: for a token with the `metrics` (or `admin`) scope, as
 * Prometheus sends it (`authorization.credentials_file` in its scrape config).
 */
export function metricsRoutes(deps: {
  readonly auth: Authenticator;
  readonly metrics: Pick<ServerMetrics, 'render' | 'contentType'>;
}): Hono {
  const app = new Hono();
  app.get('/metrics', async (c) => {
    const principal = await deps.auth.authenticate(c.req.header('authorization'), clientAddress(c));
    if (!principal) {
      throw new CairnError(
        'UNAUTHENTICATED',
        'Cannot read the metrics: a token with the metrics scope is required (Authorization: Bearer <token>), or scrape the --metrics-listen address',
      );
    }
    if (!canReadMetrics(principal)) {
      throw new CairnError(
        'FORBIDDEN',
        `Cannot read the metrics: token '${principal.tokenName}' lacks the metrics or admin scope`,
      );
    }
    return c.body(await deps.metrics.render(), 200, { 'Content-Type': deps.metrics.contentType });
  });
  return app;
}

/**
 * The handler of the separate metrics listener (`--metrics-listen`): `GET /metrics` without a
 * token, for a Prometheus on a trusted network; everything else is 404. Nothing but metrics is
 * served there, so opening it to a monitoring network exposes no API.
 */
export function metricsListener(
  metrics: Pick<ServerMetrics, 'render' | 'contentType'>,
  log: ErrorLogger,
): (req: IncomingMessage, res: ServerResponse) => void {
  const reply = (res: ServerResponse, status: number, type: string, body: string, extra = {}) => {
    res.writeHead(status, { 'Content-Type': type, 'Content-Length': Buffer.byteLength(body), ...extra });
    res.end(res.req.method === 'HEAD' ? undefined : body);
  };
  return (req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (path !== '/metrics') {
      const body = {
        code: 'NOT_FOUND',
        message: `Cannot find ${req.method} ${path}: this address serves only GET /metrics`,
      };
      reply(res, 404, 'application/json', `${JSON.stringify(body)}\n`);
      return;
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      const body = { code: 'METHOD_NOT_ALLOWED', message: `Cannot ${req.method} /metrics: use GET` };
      reply(res, 405, 'application/json', `${JSON.stringify(body)}\n`, { Allow: 'GET, HEAD' });
      return;
    }
    metrics.render().then(
      (text) => reply(res, 200, metrics.contentType, text),
      (err: unknown) => {
        const { status, body } = errorResponse(err, log);
        reply(res, status, 'application/json', `${JSON.stringify(body)}\n`);
      },
    );
  };
}
