import type { MigrationInterface, QueryRunner } from 'typeorm';

/** A tenant's webhook: where signed event notifications go, and their sealed signing secret. */
export class TenantWebhooks1795440000000 implements MigrationInterface {
  name = 'TenantWebhooks1795440000000';

  async up(q: QueryRunner): Promise<void> {
    await q.query(`ALTER TABLE "tenants" ADD "webhook_url" text`);
    await q.query(`ALTER TABLE "tenants" ADD "webhook_secret" bytea`);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`ALTER TABLE "tenants" DROP COLUMN "webhook_secret"`);
    await q.query(`ALTER TABLE "tenants" DROP COLUMN "webhook_url"`);
  }
}
