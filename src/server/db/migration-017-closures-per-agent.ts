import { type Kysely, sql } from 'kysely';
import { closureDigest, pathDigest } from './closure-digest.ts';
import type { Migration } from './migrations.ts';
import { serialId } from './sql-types.ts';

/** Rows copied per statement: well under SQLite's 32766 bound parameters. */
const COPY_CHUNK = 500;

/**
 * Reported closures kept per report (issue #23): until now one closure per workspace and root
 * and one row per store path, first writer wins, so one agent's false report was what every
 * other agent's diff and plan showed. Now a path row is keyed by what it says (path, NAR size,
 * references: `closure_paths.digest`), a closure row by its content (`closures.digest`, unique
 * per workspace and root), and each deployment points at the closure its agent reported for it
 * (`deployments.closure_id`): reports of the same content share their rows, differing ones do
 * not touch each other.
 *
 * SQLite cannot change a table's unique constraints in place, so the three tables are rebuilt
 * (new tables, rows copied with their ids, old ones dropped, new ones renamed), on both
 * databases alike. Complete closures keep their rows and are attributed to the deployments that
 * took their size from them, as those deployments' diffs used them; incomplete ones (a report
 * cut short, with no way left to finish it) are dropped.
 */
export const migration017: Migration = {
  version: 17,
  name: 'closures kept per report',
  async up(db: Kysely<unknown>, dialect) {
    await db.schema
      .createTable('closure_paths_new')
      .addColumn('id', 'integer', serialId(dialect))
      .addColumn('path', 'text', (c) => c.notNull())
      .addColumn('nar_size', 'bigint', (c) => c.notNull())
      .addColumn('refs', 'text', (c) => c.notNull())
      .addColumn('digest', 'text', (c) => c.notNull())
      .addUniqueConstraint('closure_paths_content', ['digest'])
      .execute();
    await db.schema
      .createTable('closures_new')
      .addColumn('id', 'integer', serialId(dialect))
      .addColumn('workspace_id', 'integer', (c) => c.notNull().references('workspaces.id'))
      .addColumn('root', 'text', (c) => c.notNull())
      // Null while the report is being recorded (in parts); then the content's digest.
      .addColumn('digest', 'text')
      .addColumn('complete', 'integer', (c) => c.notNull().defaultTo(0))
      .addColumn('path_count', 'integer')
      .addColumn('nar_size', 'bigint')
      .addColumn('created_at', 'bigint', (c) => c.notNull())
      .addUniqueConstraint('closures_content', ['workspace_id', 'root', 'digest'])
      .execute();
    await db.schema
      .createTable('closure_members_new')
      .addColumn('closure_id', 'integer', (c) => c.notNull().references('closures_new.id'))
      .addColumn('path_id', 'integer', (c) => c.notNull().references('closure_paths_new.id'))
      .addPrimaryKeyConstraint('closure_members_content', ['closure_id', 'path_id'])
      .execute();

    // Every path row, with its digest.
    const digests = new Map<number, string>();
    for (let after = 0; ; ) {
      const { rows } = await sql<{ id: number; path: string; nar_size: number | string; refs: string }>`
        select id, path, nar_size, refs from closure_paths where id > ${after} order by id limit ${COPY_CHUNK}`.execute(
        db,
      );
      if (rows.length === 0) break;
      const values = rows.map((r) => {
        const digest = pathDigest(r.path, Number(r.nar_size), r.refs);
        digests.set(Number(r.id), digest);
        return { id: Number(r.id), path: r.path, nar_size: Number(r.nar_size), refs: r.refs, digest };
      });
      await (db as Kysely<Tables>).insertInto('closure_paths_new').values(values).execute();
      after = Number(rows.at(-1)!.id);
    }

    // The complete closures, with their members and digests.
    const { rows: closures } = await sql<{
      id: number;
      workspace_id: number;
      root: string;
      path_count: number | null;
      nar_size: number | string | null;
      created_at: number | string;
    }>`select id, workspace_id, root, path_count, nar_size, created_at from closures where complete = 1 order by id`.execute(
      db,
    );
    for (const c of closures) {
      const { rows: members } = await sql<{ path_id: number }>`
        select path_id from closure_members where closure_id = ${c.id}`.execute(db);
      await (db as Kysely<Tables>)
        .insertInto('closures_new')
        .values({
          id: Number(c.id),
          workspace_id: Number(c.workspace_id),
          root: c.root,
          digest: closureDigest(members.map((m) => digests.get(Number(m.path_id))!)),
          complete: 1,
          path_count: c.path_count === null ? null : Number(c.path_count),
          nar_size: c.nar_size === null ? null : Number(c.nar_size),
          created_at: Number(c.created_at),
        })
        .execute();
      for (let i = 0; i < members.length; i += COPY_CHUNK) {
        await (db as Kysely<Tables>)
          .insertInto('closure_members_new')
          .values(
            members
              .slice(i, i + COPY_CHUNK)
              .map((m) => ({ closure_id: Number(c.id), path_id: Number(m.path_id) })),
          )
          .execute();
      }
    }

    await db.schema.dropTable('closure_members').execute();
    await db.schema.dropTable('closures').execute();
    await db.schema.dropTable('closure_paths').execute();
    await db.schema.alterTable('closure_paths_new').renameTo('closure_paths').execute();
    await db.schema.alterTable('closures_new').renameTo('closures').execute();
    await db.schema.alterTable('closure_members_new').renameTo('closure_members').execute();
    if (dialect === 'postgres') {
      // Rows were copied with their ids: the identity columns must go on after the largest.
      for (const table of ['closure_paths', 'closures']) {
        await sql`select setval(pg_get_serial_sequence(${table}, 'id'), coalesce((select max(id) from ${sql.table(table)}), 0) + 1, false)`.execute(
          db,
        );
      }
    }
    // Reported paths are looked up by path (a closure walk), now that a path may have several rows.
    await db.schema.createIndex('closure_paths_path').on('closure_paths').column('path').execute();

    // The closure each deployment's agent reported for it: its own, shared with identical reports.
    await db.schema
      .alterTable('deployments')
      .addColumn('closure_id', 'integer', (c) => c.references('closures.id'))
      .execute();
    await sql`update deployments set closure_id = (
        select c.id from closures c where c.workspace_id = deployments.workspace_id and c.root = deployments.store_path
      ) where closure_nar_size is not null`.execute(db);
  },
};

/** The tables as this migration writes them. */
interface Tables {
  closure_paths_new: { id: number; path: string; nar_size: number; refs: string; digest: string };
  closures_new: {
    id: number;
    workspace_id: number;
    root: string;
    digest: string | null;
    complete: number;
    path_count: number | null;
    nar_size: number | null;
    created_at: number;
  };
  closure_members_new: { closure_id: number; path_id: number };
}
