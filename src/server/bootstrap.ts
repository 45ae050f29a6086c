import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { generateTokenSecret, hashTokenSecret } from './auth/token-secret.ts';
import type { OpenDatabase } from './db/open-database.ts';
import { TokenRepository } from './db/token-repository.ts';
import { WorkspaceRepository } from './db/workspace-repository.ts';

/** The workspace every fresh server has. */
export const DEFAULT_WORKSPACE = 'default';

/**
 * Prepares a fresh server: creates the `default` workspace and, the first time only, an admin
 * token written to `<dataDir>/admin-token` (mode 0600). Returns that file's path when it was created.
 */
export async function bootstrap(
  database: OpenDatabase,
  dataDir: string,
  now: number,
): Promise<string | undefined> {
  const { id, created } = await new WorkspaceRepository(database.db).ensure(DEFAULT_WORKSPACE, now);
  if (!created) return undefined;
  const secret = generateTokenSecret();
  await new TokenRepository(database.db).create({
    workspaceId: id,
    name: 'admin',
    hash: hashTokenSecret(secret),
    scopes: ['admin'],
    createdAt: now,
    expiresAt: null,
  });
  const file = join(dataDir, 'admin-token');
  await writeFile(file, `${secret}\n`, { mode: 0o600 });
  return file;
}
