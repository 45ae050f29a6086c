/** Where blobs live: the local data dir (the default), or an S3-compatible bucket. */
export type BlobStoreConfig =
  | { readonly kind: 'local'; readonly dir: string }
  | {
      readonly kind: 's3';
      readonly bucket: string;
      /** Prepended to every key, such as `cairn/`; empty for the bucket's root. */
      readonly prefix: string;
      /** A non-AWS endpoint such as `http://minio:9000`; undefined for AWS itself. */
      readonly endpoint: string | undefined;
      readonly region: string;
      /** `http://endpoint/bucket/key` rather than `http://bucket.endpoint/key`. */
      readonly pathStyle: boolean;
      /** NAR downloads streamed through the server, or answered with a presigned redirect. */
      readonly downloads: 'proxy' | 'redirect';
      /** How long a presigned redirect stays valid. */
      readonly redirectTtlSeconds: number;
      /** From AWS_ACCESS_KEY_ID and friends; undefined lets the SDK find them (instance role, profile). */
      readonly credentials:
        | { readonly accessKeyId: string; readonly secretAccessKey: string; readonly sessionToken?: string }
        | undefined;
    };

const PARAMETERS = ['endpoint', 'region', 'path-style', 'downloads', 'redirect-ttl'];
/** S3 allows presigned URLs valid for at most seven days. */
const MAX_TTL_SECONDS = 7 * 24 * 3600;

/**
 * Parses `s3://BUCKET[/PREFIX]?endpoint=URL&region=R&path-style=true&downloads=proxy|redirect&redirect-ttl=5m`,
 * taking credentials from `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and `AWS_SESSION_TOKEN`
 * (never from the URL) and the region from `AWS_REGION` when the URL names none. Returns the
 * config, or every problem found, each a sentence of its own.
 */
export function parseBlobStoreUrl(
  text: string,
  env: NodeJS.ProcessEnv,
): { config: BlobStoreConfig } | { problems: string[] } {
  const fail = (what: string, shown = text) => ({
    problems: [`Cannot use --blob-store: ${what} (${shown})`],
  });
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    return fail('expected s3://BUCKET?endpoint=URL&region=R');
  }
  if (url.protocol !== 's3:') return fail(`unknown scheme ${url.protocol}; expected s3://BUCKET`);
  if (url.username !== '' || url.password !== '') {
    return fail(
      'credentials do not belong in the URL; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY',
      `s3://***@${url.host}${url.pathname}`,
    );
  }
  const problems: string[] = [];
  const bucket = url.hostname;
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]{1,61}[A-Za-z0-9]$/.test(bucket)) {
    problems.push(
      `Cannot use --blob-store: the bucket name must be 3 to 63 letters, digits, '.', '-' or '_' (${bucket || text})`,
    );
  }
  if (url.port !== '')
    problems.push(`Cannot use --blob-store: a bucket has no port; put it in endpoint= (${text})`);
  const prefix = url.pathname.replace(/^\/+|\/+$/g, '');
  if (prefix !== '' && !/^[A-Za-z0-9._\-/]+$/.test(prefix)) {
    problems.push(
      `Cannot use --blob-store: the key prefix may hold letters, digits, '.', '-', '_' and '/' (${prefix})`,
    );
  }
  const params = url.searchParams;
  for (const name of new Set(params.keys())) {
    if (!PARAMETERS.includes(name)) {
      problems.push(
        `Cannot use --blob-store: unknown parameter '${name}'; expected ${PARAMETERS.join(', ')}`,
      );
    } else if (params.getAll(name).length > 1) {
      problems.push(`Cannot use --blob-store: parameter '${name}' is given more than once`);
    }
  }
  const endpoint = params.get('endpoint') ?? undefined;
  if (endpoint !== undefined && !/^https?:\/\/[^/?#]+\/?$/.test(endpoint)) {
    problems.push(`Cannot use --blob-store: endpoint must be an http(s) URL without a path (${endpoint})`);
  }
  const region = params.get('region') ?? env.AWS_REGION ?? env.AWS_DEFAULT_REGION ?? 'us-east-1';
  if (!/^[a-z0-9][a-z0-9-]*$/.test(region)) {
    problems.push(`Cannot use --blob-store: region must be lower-case letters, digits and '-' (${region})`);
  }
  const pathStyleText = params.get('path-style') ?? 'false';
  if (pathStyleText !== 'true' && pathStyleText !== 'false') {
    problems.push(`Cannot use --blob-store: path-style must be true or false (${pathStyleText})`);
  }
  const downloads = params.get('downloads') ?? 'proxy';
  if (downloads !== 'proxy' && downloads !== 'redirect') {
    problems.push(`Cannot use --blob-store: downloads must be proxy or redirect (${downloads})`);
  }
  const ttlText = params.get('redirect-ttl');
  const redirectTtlSeconds = parseTtl(ttlText ?? '5m');
  if (redirectTtlSeconds === undefined) {
    problems.push(
      `Cannot use --blob-store: redirect-ttl must be a duration from 1s to 7d, such as 300s, 5m or 1h (${ttlText})`,
    );
  } else if (ttlText !== null && downloads !== 'redirect') {
    problems.push('Cannot use --blob-store: redirect-ttl applies only with downloads=redirect');
  }
  const accessKeyId = env.AWS_ACCESS_KEY_ID || undefined;
  const secretAccessKey = env.AWS_SECRET_ACCESS_KEY || undefined;
  if ((accessKeyId === undefined) !== (secretAccessKey === undefined)) {
    problems.push(
      `Cannot use --blob-store: set both AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or neither (only ${accessKeyId ? 'AWS_ACCESS_KEY_ID' : 'AWS_SECRET_ACCESS_KEY'} is set)`,
    );
  }
  if (problems.length > 0) return { problems };
  const sessionToken = env.AWS_SESSION_TOKEN || undefined;
  return {
    config: Object.freeze({
      kind: 's3',
      bucket,
      prefix: prefix === '' ? '' : `${prefix}/`,
      endpoint: endpoint?.replace(/\/$/, ''),
      region,
      pathStyle: pathStyleText === 'true',
      downloads: downloads as 'proxy' | 'redirect',
      redirectTtlSeconds: redirectTtlSeconds ?? 300,
      credentials:
        accessKeyId && secretAccessKey
          ? Object.freeze({ accessKeyId, secretAccessKey, ...(sessionToken ? { sessionToken } : {}) })
          : undefined,
    }),
  };
}

/** `300`, `300s`, `5m`, `1h` or `1d` in seconds, or undefined when malformed or out of range. */
function parseTtl(text: string): number | undefined {
  const m = /^(\d{1,7})(s|m|h|d)?$/.exec(text);
  if (!m) return undefined;
  const seconds = Number(m[1]) * { s: 1, m: 60, h: 3600, d: 86400 }[(m[2] ?? 's') as 's'];
  return seconds >= 1 && seconds <= MAX_TTL_SECONDS ? seconds : undefined;
}
