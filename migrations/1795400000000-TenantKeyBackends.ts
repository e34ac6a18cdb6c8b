import type { MigrationInterface, QueryRunner } from 'typeorm';

/** BYOK: each tenant's key-backend configurations, and which one wrapped each data key. */
export class TenantKeyBackends1795400000000 implements MigrationInterface {
  name = 'TenantKeyBackends1795400000000';

  async up(q: QueryRunner): Promise<void> {
    await q.query(
      `CREATE TABLE "tenant_key_backends" ("id" uuid NOT NULL, "tenant_id" uuid NOT NULL, "type" text NOT NULL, "settings" jsonb NOT NULL, "secret_wrapped_key" bytea, "secret" bytea, "created_at" TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(), "retired_at" TIMESTAMP WITH TIME ZONE, CONSTRAINT "PK_52a44daccbe3307418d9a5f54fd" PRIMARY KEY ("id"))`,
    );
    await q.query(
      `CREATE INDEX "ix_tenant_key_backends_tenant" ON "tenant_key_backends"  ("tenant_id", "created_at") `,
    );
    await q.query(`ALTER TABLE "tenants" ADD "key_backend_id" uuid`);
    await q.query(`ALTER TABLE "data_keys" ADD "backend_id" uuid`);
    await q.query(
      `ALTER TABLE "tenant_key_backends" ADD CONSTRAINT "FK_8752cc8d2cd876789b7d4c3b1a7" FOREIGN KEY ("tenant_id") REFERENCES "tenants"("id") ON DELETE CASCADE ON UPDATE NO ACTION`,
    );
    await q.query(
      `ALTER TABLE "data_keys" ADD CONSTRAINT "FK_4cb08f395667c462fbe380c2e1d" FOREIGN KEY ("backend_id") REFERENCES "tenant_key_backends"("id") ON DELETE RESTRICT ON UPDATE NO ACTION`,
    );
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`ALTER TABLE "data_keys" DROP CONSTRAINT "FK_4cb08f395667c462fbe380c2e1d"`);
    await q.query(`ALTER TABLE "data_keys" DROP COLUMN "backend_id"`);
    await q.query(`ALTER TABLE "tenants" DROP COLUMN "key_backend_id"`);
    await q.query(`DROP TABLE "tenant_key_backends"`);
  }
}
