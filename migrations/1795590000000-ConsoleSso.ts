import type { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * Console single sign-on through one of a tenant's identity providers: the tenant's `console_login` (the
 * identity provider, the OIDC client and which of its users are the tenant's admins and auditors) with the
 * client's secret sealed; console sessions that belong to such a user instead of an admin key (exactly one of
 * the two); and the pending sign-ins, one row per sign-in started (its state's SHA-256, the hash of the
 * browser's cookie, its nonce and PKCE verifier sealed), taken once by the callback.
 */
export class ConsoleSso1795590000000 implements MigrationInterface {
  name = 'ConsoleSso1795590000000';

  async up(q: QueryRunner): Promise<void> {
    await q.query(`ALTER TABLE "tenants" ADD "console_login" jsonb`);
    await q.query(`ALTER TABLE "tenants" ADD "console_login_secret" bytea`);
    await q.query(`ALTER TABLE "console_sessions" ALTER COLUMN "admin_key_id" DROP NOT NULL`);
    await q.query(`ALTER TABLE "console_sessions" ADD "user_id" text`);
    await q.query(`ALTER TABLE "console_sessions" ADD "identity_provider" text`);
    await q.query(
      `ALTER TABLE "console_sessions" ADD CONSTRAINT "ck_console_sessions_principal" CHECK (("admin_key_id" IS NOT NULL AND "user_id" IS NULL AND "identity_provider" IS NULL) OR ("admin_key_id" IS NULL AND "user_id" IS NOT NULL AND "identity_provider" IS NOT NULL AND "tenant_id" IS NOT NULL AND "role" IN ('admin', 'auditor')))`,
    );
    await q.query(
      `CREATE TABLE "console_sign_ins" ("state_hash" bytea NOT NULL, "tenant_id" uuid NOT NULL, "browser_hash" bytea NOT NULL, "secrets" bytea NOT NULL, "created_at" TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(), "expires_at" TIMESTAMP WITH TIME ZONE NOT NULL, CONSTRAINT "PK_console_sign_ins" PRIMARY KEY ("state_hash"))`,
    );
    await q.query(`CREATE INDEX "ix_console_sign_ins_tenant" ON "console_sign_ins" ("tenant_id") `);
    await q.query(
      `ALTER TABLE "console_sign_ins" ADD CONSTRAINT "FK_console_sign_ins_tenant" FOREIGN KEY ("tenant_id") REFERENCES "tenants"("id") ON DELETE CASCADE ON UPDATE NO ACTION`,
    );
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`DROP TABLE "console_sign_ins"`);
    await q.query(`DELETE FROM "console_sessions" WHERE "admin_key_id" IS NULL`);
    await q.query(`ALTER TABLE "console_sessions" DROP CONSTRAINT "ck_console_sessions_principal"`);
    await q.query(`ALTER TABLE "console_sessions" DROP COLUMN "identity_provider"`);
    await q.query(`ALTER TABLE "console_sessions" DROP COLUMN "user_id"`);
    await q.query(`ALTER TABLE "console_sessions" ALTER COLUMN "admin_key_id" SET NOT NULL`);
    await q.query(`ALTER TABLE "tenants" DROP COLUMN "console_login_secret"`);
    await q.query(`ALTER TABLE "tenants" DROP COLUMN "console_login"`);
  }
}
