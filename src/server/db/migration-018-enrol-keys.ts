import type { Kysely } from 'kysely';
import type { Migration } from './migrations.ts';

/**
 * `agents.enrol_key_hash`: the hex SHA-256 of the random key a machine made before it enrolled
 * and keeps in its state dir. An enrolment whose answer never reached the machine (the network
 * dropped it, or the machine stopped before storing its token) left the name taken and the
 * machine without a token; with the same key and the same enrolment token the machine now
 * enrols again under its name and gets a new token (the first one is revoked).
 */
export const migration018: Migration = {
  version: 18,
  name: 'enrol keys',
  async up(db: Kysely<unknown>) {
    await db.schema.alterTable('agents').addColumn('enrol_key_hash', 'text').execute();
  },
};
