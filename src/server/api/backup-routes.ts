import { Hono } from 'hono';
import { z } from 'zod';
import { CairnError } from '../../lib/cairn-error.ts';
import { parseOrThrow } from '../../protocol/parse-or-throw.ts';
import type { Authenticator } from '../auth/authenticator.ts';
import { isAdmin } from '../auth/permissions.ts';
import { type BackupSource, writeBackup } from '../backup/write-backup.ts';
import type { AuditRepository } from '../db/audit-repository.ts';
import type { WorkspaceRepository } from '../db/workspace-repository.ts';
import { clientAddress } from '../http/client-address.ts';

/** What the backup route needs. */
export interface BackupRouteDeps {
  readonly auth: Authenticator;
  readonly workspaces: WorkspaceRepository;
  /** The workspace whose admins may back up the whole server: the one the first start made. */
  readonly adminWorkspace: string;
  readonly audit: AuditRepository;
  /** Undefined when the app was built without a data dir (tests building it in-process). */
  readonly source: BackupSource | undefined;
  readonly now: () => number;
}

const backupQuerySchema = z.strictObject({ 'include-store': z.enum(['true', 'false']).default('false') });

/**
 * `GET /api/v1/server/backup`: the whole server as one tar archive (see write-backup.ts),
 * streamed. It holds every workspace's signing keys, so it takes an admin token of the `default`
 * workspace, the one the first start made.
 */
export function backupRoutes(deps: BackupRouteDeps): Hono {
  const app = new Hono();
  app.get('/server/backup', async (c) => {
    const principal = await deps.auth.authenticate(c.req.header('authorization'), clientAddress(c));
    if (!principal)
      throw new CairnError(
        'UNAUTHENTICATED',
        'Cannot back up the server: a token is required (Authorization: Bearer <token>)',
      );
    const defaultId = await deps.workspaces.idOf(deps.adminWorkspace);
    if (!isAdmin(principal) || principal.workspaceId !== defaultId) {
      throw new CairnError(
        'FORBIDDEN',
        `Cannot back up the server: token '${principal.tokenName}' is not an admin token of the ${deps.adminWorkspace} workspace`,
      );
    }
    const query = parseOrThrow(backupQuerySchema, c.req.query(), {
      action: 'back up the server',
      whole: '(query)',
      code: 'INVALID_ARGUMENT',
    });
    if (!deps.source) throw new CairnError('NOT_SUPPORTED', 'Cannot back up the server: it has no data dir');
    const includeStore = query['include-store'] === 'true';
    const chunks = await writeBackup(deps.source, { includeStore, now: deps.now() });
    await deps.audit.record(
      {
        workspaceId: principal.workspaceId,
        tokenId: principal.tokenId,
        tokenName: principal.tokenName,
        address: clientAddress(c),
        action: 'server.backup',
        target: 'server',
        detail: { includeStore },
      },
      deps.now(),
    );
    return new Response(ReadableStream.from(chunks), {
      headers: {
        'Content-Type': 'application/x-tar',
        'Content-Disposition': 'attachment; filename="cairn-backup.tar"',
        'Cache-Control': 'no-store',
      },
    });
  });
  return app;
}
