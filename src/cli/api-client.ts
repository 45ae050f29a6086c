import type { z } from 'zod';
import { CairnError } from '../lib/cairn-error.ts';
import { type ErrorCode, errorCodes } from '../lib/error-codes.ts';
import { type ErrorBody, errorBodySchema } from '../protocol/api-schemas.ts';
import { parseOrThrow } from '../protocol/parse-or-throw.ts';

/** Where the CLI finds the server and its token. */
export interface ClientOptions {
  readonly server: string;
  readonly token: string | undefined;
  readonly workspace: string;
}

/** A thin client of Cairn's JSON API: one request, validated answer, errors as {@link CairnError}. */
export class ApiClient {
  readonly server: string;
  readonly #token: string | undefined;
  readonly #workspace: string;

  /** The workspace the client works in. */
  get workspace(): string {
    return this.#workspace;
  }

  constructor(options: ClientOptions) {
    this.server = options.server.replace(/\/+$/, '');
    this.#token = options.token;
    this.#workspace = options.workspace;
  }

  /** Authorization header value, when a token is set. */
  get authorization(): string | undefined {
    return this.#token === undefined ? undefined : `Bearer ${this.#token}`;
  }

  /** The URL of a workspace-scoped API path, such as `caches/main`. */
  url(path: string): string {
    return `${this.server}/api/v1/workspaces/${encodeURIComponent(this.#workspace)}/${path}`;
  }

  /** Sends a request and validates the JSON answer against `schema`. */
  async request<S extends z.ZodType>(
    method: string,
    path: string,
    schema: S | null,
    body?: unknown,
  ): Promise<z.output<S>> {
    const headers: Record<string, string> = { Accept: 'application/json' };
    if (this.authorization) headers.Authorization = this.authorization;
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    let res: Response;
    const target = this.url(path);
    try {
      res = await fetch(target, { method, headers, body: body === undefined ? null : JSON.stringify(body) });
    } catch (err) {
      throw new CairnError(
        'COMMAND_FAILED',
        `Cannot reach the server: ${(err as Error).cause ?? (err as Error).message} (${this.server})`,
        {
          cause: err,
        },
      );
    }
    const text = await res.text();
    if (!res.ok) throw errorFromResponse(res.status, text, `${method} ${target}`);
    if (schema === null) return undefined as z.output<S>;
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch {
      throw new CairnError(
        'COMMAND_FAILED',
        `Cannot read the server's answer: not JSON (${text.slice(0, 100)})`,
      );
    }
    return parseOrThrow(schema, json, {
      action: `read the server's answer to ${method} ${path}`,
      whole: '(answer)',
      code: 'COMMAND_FAILED',
    });
  }
}

/** Turns an error answer into a {@link CairnError} with the server's code and message. */
export function errorFromResponse(status: number, text: string, what: string): CairnError {
  let body: ErrorBody | undefined;
  try {
    const parsed = errorBodySchema.safeParse(JSON.parse(text));
    if (parsed.success) body = parsed.data;
  } catch {
    // Not our error body (a proxy's page, say): fall through.
  }
  if (body) {
    const code = (Object.hasOwn(errorCodes, body.code) ? body.code : 'INTERNAL') as ErrorCode;
    // The message already names every invalid field; they are kept, not printed again.
    return new CairnError(code, body.message, {
      status,
      ...(body.detail ? { detail: body.detail } : {}),
      ...(body.validations ? { validations: body.validations } : {}),
    });
  }
  const code: ErrorCode =
    status === 401
      ? 'UNAUTHENTICATED'
      : status === 403
        ? 'FORBIDDEN'
        : status === 404
          ? 'NOT_FOUND'
          : 'COMMAND_FAILED';
  return new CairnError(
    code,
    `Cannot ${what}: the server answered ${status} (${text.slice(0, 200).trim()})`,
    { status },
  );
}
