import { z } from 'zod';
import { nameSchema, tokenScopeSchema } from './token-scope.ts';

/** The one error body of every HTTP error Cairn returns. */
export const errorBodySchema = z.object({
  code: z.string(),
  message: z.string(),
  detail: z.string().optional(),
  validations: z.array(z.object({ field: z.string(), message: z.string() })).optional(),
});
export type ErrorBody = z.infer<typeof errorBodySchema>;

/** `POST /api/v1/workspaces/:ws/caches` */
export const createCacheBodySchema = z.strictObject({ name: nameSchema, public: z.boolean().default(false) });
export type CreateCacheBody = z.input<typeof createCacheBodySchema>;

/** A cache as the API shows it. */
export const cacheInfoSchema = z.object({
  name: z.string(),
  public: z.boolean(),
  publicKey: z.string(),
  url: z.string(),
  createdAt: z.string(),
  paths: z.number().int().nonnegative(),
  narBytes: z.number().int().nonnegative(),
  fileBytes: z.number().int().nonnegative(),
});
export type CacheInfo = z.infer<typeof cacheInfoSchema>;

export const cacheListSchema = z.object({ caches: z.array(cacheInfoSchema) });

/** `POST /api/v1/workspaces/:ws/tokens` */
export const createTokenBodySchema = z.strictObject({
  name: z.string().min(1).max(200),
  scopes: z.array(tokenScopeSchema).min(1),
  expiresAt: z.iso.datetime().optional(),
});
export type CreateTokenBody = z.infer<typeof createTokenBodySchema>;

/** A token as listed: never the secret. */
export const tokenInfoSchema = z.object({
  id: z.string(),
  name: z.string(),
  scopes: z.array(z.string()),
  createdAt: z.string(),
  expiresAt: z.string().nullable(),
  revokedAt: z.string().nullable(),
  lastUsedAt: z.string().nullable(),
});
export type TokenInfo = z.infer<typeof tokenInfoSchema>;

/** The answer to creating a token: the secret, shown this once. */
export const createdTokenSchema = tokenInfoSchema.extend({ token: z.string() });

export const tokenListSchema = z.object({ tokens: z.array(tokenInfoSchema) });

/** `POST /api/v1/workspaces/:ws/caches/:name/missing`: which of these store paths the cache lacks. */
export const missingPathsBodySchema = z.strictObject({ paths: z.array(z.string()).max(100_000) });
export const missingPathsSchema = z.object({ missing: z.array(z.string()) });
