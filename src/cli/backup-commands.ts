import { randomBytes } from 'node:crypto';
import { chmod, open, rename, rm, stat } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import type { Command } from 'commander';
import { CairnError } from '../lib/cairn-error.ts';
import { errorFromResponse } from './api-client.ts';
import type { CommandContext } from './command-context.ts';
import { formatBytes } from './format-table.ts';
import { restoreBackup } from './restore-backup.ts';
import { verifyBackup } from './verify-backup.ts';

/** `cairn server backup` and `cairn server restore`, under `server`. */
export function registerBackupCommands(server: Command, ctx: CommandContext): void {
  server
    .command('backup')
    .description(
      'download a consistent backup of a running server (SQLite): database, signing keys, token hashes, history; needs an admin token of the default workspace',
    )
    .requiredOption(
      '--to <file>',
      'where to write the backup (a tar archive, mode 0600); replaced if it exists',
    )
    .option('--include-store', 'also copy the NAR files of a local blob store (not of an S3 bucket)', false)
    .action(async (opts: { to: string; includeStore: boolean }) => {
      const to = resolve(opts.to);
      const dir = await stat(dirname(to)).catch(() => undefined);
      if (!dir?.isDirectory()) {
        throw new CairnError(
          'INVALID_ARGUMENT',
          `Cannot write the backup: no such directory (${dirname(to)})`,
        );
      }
      const client = ctx.client();
      const url = `${client.server}/api/v1/server/backup?include-store=${opts.includeStore}`;
      let res: Response;
      try {
        res = await fetch(url, {
          headers: client.authorization ? { Authorization: client.authorization } : {},
        });
      } catch (err) {
        throw new CairnError(
          'COMMAND_FAILED',
          `Cannot reach the server: ${(err as Error).cause ?? (err as Error).message} (${client.server})`,
        );
      }
      if (!res.ok || !res.body) throw errorFromResponse(res.status, await res.text(), 'back up the server');
      const partial = join(dirname(to), `.${basename(to)}.${randomBytes(4).toString('hex')}.partial`);
      const out = await open(partial, 'wx', 0o600);
      try {
        try {
          // The mode given to open is masked by the umask; this one is not.
          await chmod(partial, 0o600);
          for await (const chunk of res.body) await out.write(chunk);
          await out.sync();
        } finally {
          await out.close();
        }
        // A connection cut short, or a server failing half-way, leaves a file that does not verify.
        const { manifest, entries } = await verifyBackup(partial);
        await rename(partial, to);
        const size = (await stat(to)).size;
        const store =
          manifest.store.kind === 's3'
            ? `NAR files in ${manifest.store.location} (not copied: copy the bucket)`
            : manifest.store.included
              ? 'NAR files included'
              : 'NAR files not included (--include-store)';
        ctx.io.stderr.write(
          `backup of server ${manifest.serverId} written to ${to}: ${formatBytes(size)}, ${entries.length} files, verified; ${store}\n`,
        );
      } catch (err) {
        await rm(partial, { force: true });
        throw err;
      }
    });
  server
    .command('restore')
    .description(
      'restore a backup into a new data dir, then start `cairn server --data-dir DIR` on it; checks the whole file first',
    )
    .argument('<file>', 'a file written by `cairn server backup`')
    .option('--data-dir <dir>', 'the data dir to create; must not exist or be empty (required)')
    .action(async (file: string, opts: { dataDir?: string }, cmd: Command) => {
      // `cairn server` has a --data-dir of its own, which commander gives the flag to.
      const target = opts.dataDir ?? (cmd.parent?.opts() as { dataDir?: string } | undefined)?.dataDir;
      if (target === undefined) {
        throw new CairnError('INVALID_ARGUMENT', 'Cannot restore the backup: --data-dir is required');
      }
      const { manifest, dataDir, blobs } = await restoreBackup(file, target);
      const lines = [
        `restored server ${manifest.serverId} (backup of ${manifest.createdAt}, Cairn ${manifest.cairnVersion}) into ${dataDir}`,
      ];
      if (manifest.store.kind === 's3') {
        lines.push(
          `its ${manifest.storeObjects.count} NAR files stay in the bucket: start the server with --blob-store ${manifest.store.location}`,
        );
      } else if (manifest.store.included) {
        lines.push(`with ${blobs} files of the blob store`);
      } else if (manifest.storeObjects.count > 0) {
        lines.push(
          `the backup holds no NAR files: copy the old server's DATA_DIR/blobs to ${join(dataDir, 'blobs')} before starting it (${manifest.storeObjects.count} files, ${formatBytes(manifest.storeObjects.bytes)})`,
        );
      }
      lines.push(`start it with: cairn server --data-dir ${dataDir}`);
      ctx.io.stderr.write(`${lines.join('\n')}\n`);
    });
}
