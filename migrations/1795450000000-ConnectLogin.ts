import type { MigrationInterface, QueryRunner } from 'typeorm';

/** Connect login: sign-in at the tenant's identity provider binds the browser to the session's user. */
export class ConnectLogin1795450000000 implements MigrationInterface {
  name = 'ConnectLogin1795450000000';

  async up(q: QueryRunner): Promise<void> {
    await q.query(`ALTER TABLE "tenants" ADD "connect_login" jsonb`);
    await q.query(`ALTER TABLE "tenants" ADD "connect_login_secret" bytea`);
    await q.query(`ALTER TABLE "connect_sessions" ADD "login_state_hash" bytea`);
    await q.query(`ALTER TABLE "connect_sessions" ADD "login_secrets" bytea`);
    await q.query(`ALTER TABLE "connect_sessions" ADD "verified_browser_hash" bytea`);
    await q.query(
      `CREATE UNIQUE INDEX "uq_connect_sessions_login_state_hash" ON "connect_sessions"  ("login_state_hash") WHERE "login_state_hash" IS NOT NULL`,
    );
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`DROP INDEX "uq_connect_sessions_login_state_hash"`);
    for (const c of ['verified_browser_hash', 'login_secrets', 'login_state_hash']) {
      await q.query(`ALTER TABLE "connect_sessions" DROP COLUMN "${c}"`);
    }
    await q.query(`ALTER TABLE "tenants" DROP COLUMN "connect_login_secret"`);
    await q.query(`ALTER TABLE "tenants" DROP COLUMN "connect_login"`);
  }
}
