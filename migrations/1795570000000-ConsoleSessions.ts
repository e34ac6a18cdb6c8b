import type { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * The console's sign-in sessions: only the SHA-256 of the cookie's token is stored, with the admin key that
 * signed in (its revocation ends the session, and deleting it or its tenant removes the row), the key's tenant
 * and role, and the idle and absolute limits' times. The CSRF token is derived from the cookie's token, so
 * nothing else is kept.
 */
export class ConsoleSessions1795570000000 implements MigrationInterface {
  name = 'ConsoleSessions1795570000000';

  async up(q: QueryRunner): Promise<void> {
    await q.query(
      `CREATE TABLE "console_sessions" ("id" uuid NOT NULL, "token_hash" bytea NOT NULL, "admin_key_id" uuid NOT NULL, "tenant_id" uuid, "role" text NOT NULL, "created_at" TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(), "last_seen_at" TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(), "expires_at" TIMESTAMP WITH TIME ZONE NOT NULL, CONSTRAINT "ck_console_sessions_role" CHECK ("role" IN ('platform_admin', 'admin', 'auditor')), CONSTRAINT "PK_console_sessions" PRIMARY KEY ("id"))`,
    );
    await q.query(
      `CREATE UNIQUE INDEX "uq_console_sessions_token_hash" ON "console_sessions" ("token_hash") `,
    );
    await q.query(`CREATE INDEX "ix_console_sessions_admin_key" ON "console_sessions" ("admin_key_id") `);
    await q.query(`CREATE INDEX "ix_console_sessions_tenant" ON "console_sessions" ("tenant_id") `);
    await q.query(
      `ALTER TABLE "console_sessions" ADD CONSTRAINT "FK_console_sessions_admin_key" FOREIGN KEY ("admin_key_id") REFERENCES "admin_keys"("id") ON DELETE CASCADE ON UPDATE NO ACTION`,
    );
    await q.query(
      `ALTER TABLE "console_sessions" ADD CONSTRAINT "FK_console_sessions_tenant" FOREIGN KEY ("tenant_id") REFERENCES "tenants"("id") ON DELETE CASCADE ON UPDATE NO ACTION`,
    );
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`DROP TABLE "console_sessions"`);
  }
}
