import type { Context } from 'hono';
import type { z } from 'zod';
import { CairnError } from '../../lib/cairn-error.ts';
import { parseOrThrow } from '../../protocol/parse-or-throw.ts';
import { MAX_DEPLOY_JSON_BYTES, MAX_JSON_BYTES } from '../http/request-body-limits.ts';

export { MAX_DEPLOY_JSON_BYTES };

/**
 * Reads and validates a JSON request body against a schema; every problem is reported
 * together, each with the field it concerns. The body arrives already limited while it streamed
 * (see request-body-limits.ts); `maxBytes` is checked again here for a route with a lower limit.
 * @throws CairnError BAD_REQUEST for a body that is not JSON, INVALID_ARGUMENT for one that does not fit.
 */
export async function parseJsonBody<S extends z.ZodType>(
  c: Context,
  schema: S,
  action: string,
  maxBytes = MAX_JSON_BYTES,
): Promise<z.output<S>> {
  const declared = Number(c.req.header('content-length') ?? 0);
  if (declared > maxBytes)
    throw new CairnError('TOO_LARGE', `Cannot ${action}: body larger than ${maxBytes} bytes`);
  const text = await c.req.text();
  if (text.length > maxBytes)
    throw new CairnError('TOO_LARGE', `Cannot ${action}: body larger than ${maxBytes} bytes`);
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new CairnError(
      'BAD_REQUEST',
      `Cannot ${action}: the body is not valid JSON (${(err as Error).message})`,
    );
  }
  return parseOrThrow(schema, json, { action });
}
