import type { IncomingMessage, ServerResponse } from 'node:http';
import { pipeline } from 'node:stream/promises';
import { CairnError } from '../../lib/cairn-error.ts';
import type { Authenticator } from '../auth/authenticator.ts';
import { canPull, canPush } from '../auth/permissions.ts';
import type { Principal } from '../auth/principal.ts';
import type { AuditRepository } from '../db/audit-repository.ts';
import { requestClientAddress } from '../http/client-address.ts';
import { type ErrorLogger, errorResponse } from '../http/error-response.ts';
import type { CacheRequestKind, ServerMetrics } from '../metrics/server-metrics.ts';
import { type BinaryCache, OPAQUE_FOLDERS, type ResolvedCache } from './binary-cache.ts';
import { parseRange } from './parse-range.ts';

const NARINFO = /^([0-9abcdfghijklmnpqrsvwxyz]{32})\.narinfo$/;
const LISTING = /^[0-9abcdfghijklmnpqrsvwxyz]{32}\.ls$/;
/** Narinfos are small; a path with tens of thousands of references still fits. */
const MAX_NARINFO_BYTES = 4 * 1024 * 1024;
const NIX_CACHE_INFO = 'StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 41\n';

/**
 * Serves the Nix binary cache protocol under `/cache/<name>/` on Node's HTTP objects directly:
 * this is the hot path (narinfo lookups by the thousand, NARs of gigabytes), and it must answer
 * `Expect: 100-continue` before the body is read, which a fetch-style framework cannot.
 */
export class CacheHandler {
  readonly #cache: BinaryCache;
  readonly #auth: Authenticator;
  readonly #log: ErrorLogger;
  readonly #audit: AuditRepository | undefined;
  readonly #metrics: Pick<ServerMetrics, 'cacheRequest' | 'uploadRefused'> | undefined;

  constructor(deps: {
    cache: BinaryCache;
    auth: Authenticator;
    log: ErrorLogger;
    audit?: AuditRepository;
    metrics?: Pick<ServerMetrics, 'cacheRequest' | 'uploadRefused'>;
  }) {
    this.#cache = deps.cache;
    this.#auth = deps.auth;
    this.#log = deps.log;
    this.#audit = deps.audit;
    this.#metrics = deps.metrics;
  }

  /**
   * Handles a request whose path starts with `/cache/`. With `expectContinue`, the request
   * waits for `100 Continue`, sent only once its credentials were accepted.
   */
  async handle(req: IncomingMessage, res: ServerResponse, expectContinue = false): Promise<void> {
    if (this.#metrics) this.#count(req, res, this.#metrics);
    if (!expectContinue && this.#answerFromMemory(req, res)) return;
    try {
      await this.#route(req, res, expectContinue);
    } catch (err) {
      if (req.method === 'PUT' && err instanceof CairnError)
        this.#metrics?.uploadRefused(cacheRequestKind(req.url ?? ''), err.code);
      // The client went away mid-upload or mid-download: there is no one to answer, and
      // nothing unexpected to log (Nix cuts and resumes downloads as a matter of course).
      if (!req.socket || req.socket.destroyed) {
        res.destroy();
        return;
      }
      const { status, body, headers } = errorResponse(err, this.#log);
      if (res.headersSent) {
        res.destroy();
        return;
      }
      const text = `${JSON.stringify(body)}\n`;
      if (status === 401) res.setHeader('WWW-Authenticate', 'Basic realm="cairn", charset="UTF-8"');
      // An upload refused before its body was read: close rather than read gigabytes for nothing.
      if (req.method === 'PUT' && !req.readableEnded) res.setHeader('Connection', 'close');
      res.writeHead(status, {
        ...headers,
        'Content-Type': 'application/json',
        'Content-Length': Buffer.byteLength(text),
      });
      res.end(req.method === 'HEAD' ? undefined : text);
      if (req.method === 'PUT' && !req.readableEnded) req.resume();
    }
  }

  /**
   * Counts the request once its answer is over (sent, or cut short): the bytes its connection
   * wrote meanwhile (HTTP/1.1 answers a connection's requests one at a time, so the difference
   * of the socket's counter is this answer, headers included), and the body bytes it uploaded.
   */
  #count(req: IncomingMessage, res: ServerResponse, metrics: Pick<ServerMetrics, 'cacheRequest'>): void {
    const socket = req.socket;
    const written = socket.bytesWritten;
    res.once('close', () => {
      metrics.cacheRequest({
        kind: cacheRequestKind(req.url ?? ''),
        method: req.method ?? 'GET',
        code: res.statusCode,
        sentBytes: socket.bytesWritten - written,
        receivedBytes: bodyBytes.get(req) ?? 0,
      });
    });
  }

  /**
   * The hot path, without a promise: a GET or HEAD of a narinfo already in memory, of a public
   * cache without credentials, or of any cache with a token remembered from a recent request
   * that may pull from it. Anything else returns false and takes the general path, which
   * answers every refusal.
   */
  #answerFromMemory(req: IncomingMessage, res: ServerResponse): boolean {
    const method = req.method;
    if (method !== 'GET' && method !== 'HEAD') return false;
    const url = req.url ?? '';
    // `/cache/<name>/<32 chars>.narinfo`, with nothing to percent-decode.
    const slash = url.indexOf('/', 7);
    if (slash < 0 || url.length - slash !== 41 || url.includes('%')) return false;
    const cache = this.#cache.resolvedInMemory(url.slice(7, slash));
    if (!cache) return false;
    const m = NARINFO.exec(url.slice(slash + 1));
    if (!m) return false;
    const authorization = req.headers.authorization;
    if (authorization === undefined) {
      if (!cache.public) return false;
    } else {
      const principal = this.#auth.authenticateFromMemory(authorization, requestClientAddress(req));
      if (!principal) return false;
      if (!cache.public && !(canPull(principal, cache.name) && principal.workspaceId === cache.workspace_id))
        return false;
    }
    const body = this.#cache.narinfoInMemory(cache, m[1]!);
    if (body === undefined) return false;
    res.writeHead(200, [
      'Content-Type',
      'text/x-nix-narinfo',
      'Cache-Control',
      cache.public ? 'public, max-age=300' : 'private, max-age=300',
      'Content-Length',
      String(Buffer.byteLength(body)),
    ]);
    res.end(method === 'HEAD' ? undefined : body);
    return true;
  }

  async #route(req: IncomingMessage, res: ServerResponse, expectContinue: boolean): Promise<void> {
    const [name = '', ...rest] = cachePathSegments(req.url ?? '/');
    const method = req.method ?? 'GET';
    const cache = await this.#cache.resolve(name);
    if (!cache) throw new CairnError('NOT_FOUND', `Cannot find cache: no cache named '${name}'`);
    const write = method === 'PUT';
    if (!write && method !== 'GET' && method !== 'HEAD') {
      res.setHeader('Allow', 'GET, HEAD, PUT');
      throw new CairnError('METHOD_NOT_ALLOWED', `Cannot ${method} in a binary cache: use GET, HEAD or PUT`);
    }
    const principal = await this.#authorize(req, cache, write);
    const encoding = req.headers['content-encoding']?.trim().toLowerCase();
    if (write && encoding && encoding !== 'identity') {
      // Stored as sent, it would be served without its encoding and read as garbage.
      throw new CairnError(
        'UNSUPPORTED_COMPRESSION',
        `Cannot upload ${rest.join('/')}: Content-Encoding ${encoding.slice(0, 40)} is not accepted; send it uncompressed (for Nix, drop log-compression, narinfo-compression and ls-compression from the cache URL)`,
      );
    }
    if (expectContinue) res.writeContinue();

    const [first = '', second, ...more] = rest;
    if (rest.length === 1 && first === 'nix-cache-info' && !write) {
      return send(res, method, 200, NIX_CACHE_INFO, {
        'Content-Type': 'text/x-nix-cache-info',
        'Cache-Control': 'max-age=3600',
      });
    }
    const narinfo = rest.length === 1 ? NARINFO.exec(first) : null;
    if (narinfo) {
      const hashPart = narinfo[1]!;
      if (write) {
        const text = await readText(req, MAX_NARINFO_BYTES);
        const { created, storePath } = await this.#cache.putNarinfo(cache, hashPart, text);
        if (created && principal) {
          await this.#audit?.record(
            {
              workspaceId: cache.workspace_id,
              tokenId: principal.tokenId,
              tokenName: principal.tokenName,
              action: 'cache.push',
              target: storePath,
              address: requestClientAddress(req),
              detail: { cache: cache.name },
            },
            Date.now(),
          );
        }
        return send(res, method, created ? 201 : 200, '', {});
      }
      const body = await this.#cache.narinfo(cache, hashPart);
      if (body === undefined) {
        // The common miss (a substituter asks for every path it lacks): no exception, no stack trace.
        const text = `${JSON.stringify({ code: 'NOT_FOUND', message: `Cannot find ${hashPart}.narinfo in cache '${cache.name}'` })}\n`;
        return send(res, method, 404, text, { 'Content-Type': 'application/json' });
      }
      return send(res, method, 200, body, {
        'Content-Type': 'text/x-nix-narinfo',
        'Cache-Control': cache.public ? 'public, max-age=300' : 'private, max-age=300',
      });
    }
    if (first === 'nar' && second !== undefined && more.length === 0) {
      if (write) {
        await this.#cache.uploadNar(cache, second, bodyOf(req));
        return send(res, method, 201, '', {});
      }
      return await this.#sendNar(req, res, cache, second);
    }
    if ((OPAQUE_FOLDERS as readonly string[]).includes(first) && second !== undefined && more.length === 0) {
      if (write) {
        await this.#cache.putOpaque(cache, first, second, bodyOf(req));
        return send(res, method, 201, '', {});
      }
      // Build logs are text (Nix uploads them as such): a browser shows them.
      const type = first === 'log' ? 'text/plain; charset=utf-8' : 'application/octet-stream';
      return await this.#sendOpaque(res, method, cache, [first, second], type);
    }
    // `<hash>.ls`: the NAR listing Nix writes with `write-nar-listing = true`.
    if (rest.length === 1 && LISTING.test(first)) {
      if (write) {
        await this.#cache.putOpaque(cache, 'ls', first, bodyOf(req));
        return send(res, method, 201, '', {});
      }
      return await this.#sendOpaque(res, method, cache, ['ls', first], 'application/json');
    }
    throw new CairnError('NOT_FOUND', `Cannot find ${rest.join('/')} in cache '${cache.name}'`);
  }

  async #authorize(
    req: IncomingMessage,
    cache: ResolvedCache,
    write: boolean,
  ): Promise<Principal | undefined> {
    const principal = await this.#auth.authenticate(req.headers.authorization, requestClientAddress(req));
    if (write || !cache.public) {
      if (!principal) {
        throw new CairnError(
          'UNAUTHENTICATED',
          `Cannot ${write ? 'upload to' : 'read from'} cache '${cache.name}': a token is required (Bearer, or netrc password)`,
        );
      }
      const allowed = write ? canPush(principal, cache.name) : canPull(principal, cache.name);
      if (!allowed || principal.workspaceId !== cache.workspace_id) {
        throw new CairnError(
          'FORBIDDEN',
          `Cannot ${write ? 'upload to' : 'read from'} cache '${cache.name}': token '${principal.tokenName}' lacks the cache:${cache.name}:${write ? 'push' : 'pull'} scope`,
        );
      }
    }
    return principal;
  }

  async #sendOpaque(
    res: ServerResponse,
    method: string,
    cache: ResolvedCache,
    [folder, name]: [string, string],
    contentType: string,
  ): Promise<void> {
    const file = await this.#cache.readOpaque(cache, folder, name);
    const shown = folder === 'ls' ? name : `${folder}/${name}`;
    if (!file) throw new CairnError('NOT_FOUND', `Cannot find ${shown} in cache '${cache.name}'`);
    res.writeHead(200, { 'Content-Type': contentType, 'Content-Length': file.size });
    if (method === 'HEAD') {
      file.stream.destroy();
      res.end();
      return;
    }
    await pipeline(file.stream, res);
  }

  async #sendNar(
    req: IncomingMessage,
    res: ServerResponse,
    cache: ResolvedCache,
    fileName: string,
  ): Promise<void> {
    const size = await this.#cache.narFileSize(cache, fileName);
    if (size === undefined)
      throw new CairnError('NOT_FOUND', `Cannot find nar/${fileName} in cache '${cache.name}'`);
    // The caller's right to read was checked; the URL expires, so no cache may keep the answer.
    const redirect = req.method === 'GET' ? this.#cache.narDownloadUrl(cache, fileName) : undefined;
    if (redirect) {
      res.writeHead(302, { Location: await redirect, 'Cache-Control': 'no-store', 'Content-Length': 0 });
      res.end();
      return;
    }
    const headers: Record<string, string | number> = {
      'Content-Type': 'application/x-nix-nar',
      'Accept-Ranges': 'bytes',
      // A NAR file is named by its own hash: it never changes.
      'Cache-Control': `${cache.public ? 'public' : 'private'}, max-age=31536000, immutable`,
      ETag: `"${fileName.slice(0, 52)}"`,
    };
    const range = parseRange(req.headers.range, size);
    if (range === 'unsatisfiable') {
      res.setHeader('Content-Range', `bytes */${size}`);
      throw new CairnError(
        'RANGE_NOT_SATISFIABLE',
        `Cannot serve range ${req.headers.range}: the file has ${size} bytes`,
      );
    }
    if (req.method === 'HEAD') {
      res.writeHead(200, { ...headers, 'Content-Length': size });
      res.end();
      return;
    }
    const file = await this.#cache.readNar(cache, fileName, range ?? undefined);
    if (!file) throw new CairnError('NOT_FOUND', `Cannot find nar/${fileName} in cache '${cache.name}'`);
    if (range) {
      headers['Content-Range'] = `bytes ${range.start}-${range.end}/${size}`;
      res.writeHead(206, { ...headers, 'Content-Length': file.size });
    } else {
      res.writeHead(200, { ...headers, 'Content-Length': file.size });
    }
    if (file.writeTo) await file.writeTo(res);
    else await pipeline(file.stream, res);
  }
}

/**
 * Splits `/cache/<name>/<rest...>` into percent-decoded segments, refusing any that could
 * step outside the cache once decoded: `.`, `..`, or an encoded `/`, `\` or NUL.
 * @throws CairnError BAD_REQUEST naming the offending path.
 */
function cachePathSegments(url: string): string[] {
  const q = url.indexOf('?');
  const path = q < 0 ? url : url.slice(0, q);
  // ['', 'cache', name, ...rest]
  return path
    .split('/')
    .slice(2)
    .map((segment) => {
      let decoded: string;
      try {
        decoded = decodeURIComponent(segment);
      } catch {
        throw new CairnError(
          'BAD_REQUEST',
          `Cannot use path: malformed percent-encoding (${path.slice(0, 200)})`,
        );
      }
      if (decoded === '.' || decoded === '..' || /[/\\\0]/.test(decoded)) {
        throw new CairnError(
          'BAD_REQUEST',
          `Cannot use path: '.' and '..' segments and encoded '/', '\\' or NUL are not allowed (${path.slice(0, 200)})`,
        );
      }
      return decoded;
    });
}

function send(
  res: ServerResponse,
  method: string,
  status: number,
  body: string,
  headers: Record<string, string>,
): void {
  res.writeHead(status, { ...headers, 'Content-Length': Buffer.byteLength(body) });
  res.end(method === 'HEAD' ? undefined : body);
}

/**
 * The request body as chunks. An upload refused part-way stops reading; that must not destroy
 * the request, as leaving a `for await` over it would, because that resets the connection
 * before the 4xx that says why reaches the client.
 */
/** Body bytes read from each request so far, for `cairn_cache_received_bytes_total`. */
const bodyBytes = new WeakMap<IncomingMessage, number>();

function bodyOf(req: IncomingMessage): AsyncIterable<Uint8Array> {
  return {
    async *[Symbol.asyncIterator]() {
      for await (const chunk of req.iterator({ destroyOnReturn: false }) as AsyncIterable<Uint8Array>) {
        bodyBytes.set(req, (bodyBytes.get(req) ?? 0) + chunk.length);
        yield chunk;
      }
    },
  };
}

async function readText(req: IncomingMessage, max: number): Promise<string> {
  const declared = Number(req.headers['content-length'] ?? 0);
  if (declared > max) throw new CairnError('TOO_LARGE', `Cannot read the request: larger than ${max} bytes`);
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of bodyOf(req) as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > max) throw new CairnError('TOO_LARGE', `Cannot read the request: larger than ${max} bytes`);
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString('utf8');
}

/** What a request under `/cache/<name>/` asks for, from its URL alone. */
export function cacheRequestKind(url: string): CacheRequestKind {
  const slash = url.indexOf('/', 7);
  if (slash < 0) return 'other';
  const rest = url.slice(slash + 1).split('?')[0] ?? '';
  if (rest === 'nix-cache-info') return 'nix-cache-info';
  if (rest.endsWith('.narinfo')) return 'narinfo';
  if (rest.startsWith('nar/')) return 'nar';
  if (rest.endsWith('.ls')) return 'listing';
  const folder = rest.slice(0, rest.indexOf('/'));
  if ((OPAQUE_FOLDERS as readonly string[]).includes(folder)) return 'file';
  return 'other';
}
