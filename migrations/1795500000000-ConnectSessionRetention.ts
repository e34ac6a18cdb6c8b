import type { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * Connect sessions are deleted an hour after they expire (each token endpoint answer of `consent_required`
 * creates one): the prune job finds them by expiry.
 */
export class ConnectSessionRetention1795500000000 implements MigrationInterface {
  name = 'ConnectSessionRetention1795500000000';

  async up(q: QueryRunner): Promise<void> {
    await q.query(`CREATE INDEX "ix_connect_sessions_expires_at" ON "connect_sessions" ("expires_at")`);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`DROP INDEX "ix_connect_sessions_expires_at"`);
  }
}
