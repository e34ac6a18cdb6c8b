import type { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * BYOK: the state of each tenant's data-key migration between key backends, so that a failing one is visible
 * (last error, attempts, since when), retried with backoff, and can be resumed or cancelled. A row exists only
 * while a tenant has data keys to move (or has just switched); no secret is ever stored here.
 */
export class KeyMigrationState1795491000000 implements MigrationInterface {
  name = 'KeyMigrationState1795491000000';

  async up(q: QueryRunner): Promise<void> {
    await q.query(
      `CREATE TABLE "tenant_key_migrations" (
        "tenant_id" uuid NOT NULL,
        "target_backend_id" uuid,
        "started_at" TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(),
        "attempts" integer NOT NULL DEFAULT 0,
        "failing_since" TIMESTAMP WITH TIME ZONE,
        "last_attempt_at" TIMESTAMP WITH TIME ZONE,
        "next_attempt_at" TIMESTAMP WITH TIME ZONE,
        "last_error_code" text,
        "last_error_reason" text,
        "last_error_side" text,
        "last_error_message" text,
        CONSTRAINT "PK_tenant_key_migrations" PRIMARY KEY ("tenant_id"),
        CONSTRAINT "FK_tenant_key_migrations_tenant" FOREIGN KEY ("tenant_id") REFERENCES "tenants"("id") ON DELETE CASCADE
      )`,
    );
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`DROP TABLE "tenant_key_migrations"`);
  }
}
