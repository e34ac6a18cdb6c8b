import type { MigrationInterface, QueryRunner } from 'typeorm';

/** Custom providers: each tenant's own provider definitions for in-house systems, beside the catalog. */
export class TenantProviders1795410000000 implements MigrationInterface {
  name = 'TenantProviders1795410000000';

  async up(q: QueryRunner): Promise<void> {
    await q.query(
      `CREATE TABLE "tenant_providers" ("id" uuid NOT NULL, "tenant_id" uuid NOT NULL, "key" text NOT NULL, "definition" jsonb NOT NULL, "version" integer NOT NULL, "created_at" TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(), "updated_at" TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(), CONSTRAINT "PK_cd4d5d0b4c8080abe944e923486" PRIMARY KEY ("id"))`,
    );
    await q.query(
      `CREATE UNIQUE INDEX "uq_tenant_providers_tenant_key" ON "tenant_providers"  ("tenant_id", "key") `,
    );
    await q.query(
      `ALTER TABLE "tenant_providers" ADD CONSTRAINT "FK_fdcf0d3f1478133c0f1d3f11a49" FOREIGN KEY ("tenant_id") REFERENCES "tenants"("id") ON DELETE CASCADE ON UPDATE NO ACTION`,
    );
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`ALTER TABLE "tenant_providers" DROP CONSTRAINT "FK_fdcf0d3f1478133c0f1d3f11a49"`);
    await q.query(`DROP INDEX "public"."uq_tenant_providers_tenant_key"`);
    await q.query(`DROP TABLE "tenant_providers"`);
  }
}
