import type { MigrationInterface, QueryRunner } from 'typeorm';

/** Connect flow: tenants' OAuth apps, allowed return URLs, and the pending authorization state of sessions. */
export class ConnectFlow1795420000000 implements MigrationInterface {
  name = 'ConnectFlow1795420000000';

  async up(q: QueryRunner): Promise<void> {
    await q.query(
      `CREATE TABLE "provider_apps" ("id" uuid NOT NULL, "tenant_id" uuid NOT NULL, "provider" text NOT NULL, "client_id" text NOT NULL, "client_secret" bytea, "private_key" bytea, "scopes" text array NOT NULL DEFAULT '{}', "created_at" TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(), "updated_at" TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(), CONSTRAINT "PK_fab17521f83048e53d7bb0613fc" PRIMARY KEY ("id"))`,
    );
    await q.query(
      `CREATE UNIQUE INDEX "uq_provider_apps_tenant_provider" ON "provider_apps"  ("tenant_id", "provider") `,
    );
    await q.query(`ALTER TABLE "tenants" ADD "allowed_return_urls" text array NOT NULL DEFAULT '{}'`);
    await q.query(`ALTER TABLE "connect_sessions" ADD "opened_at" TIMESTAMP WITH TIME ZONE`);
    await q.query(`ALTER TABLE "connect_sessions" ADD "state_hash" bytea`);
    await q.query(`ALTER TABLE "connect_sessions" ADD "browser_hash" bytea`);
    await q.query(`ALTER TABLE "connect_sessions" ADD "flow_secrets" bytea`);
    await q.query(`ALTER TABLE "connect_sessions" ADD "connection_id" uuid`);
    await q.query(`ALTER TABLE "connect_sessions" ADD "last_error" text`);
    await q.query(
      `CREATE UNIQUE INDEX "uq_connect_sessions_state_hash" ON "connect_sessions"  ("state_hash") WHERE "state_hash" IS NOT NULL`,
    );
    await q.query(
      `ALTER TABLE "provider_apps" ADD CONSTRAINT "FK_e33e3f9434780d31f3618836fd2" FOREIGN KEY ("tenant_id") REFERENCES "tenants"("id") ON DELETE CASCADE ON UPDATE NO ACTION`,
    );
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`DROP INDEX "uq_connect_sessions_state_hash"`);
    for (const c of [
      'last_error',
      'connection_id',
      'flow_secrets',
      'browser_hash',
      'state_hash',
      'opened_at',
    ]) {
      await q.query(`ALTER TABLE "connect_sessions" DROP COLUMN "${c}"`);
    }
    await q.query(`ALTER TABLE "tenants" DROP COLUMN "allowed_return_urls"`);
    await q.query(`DROP TABLE "provider_apps"`);
  }
}
