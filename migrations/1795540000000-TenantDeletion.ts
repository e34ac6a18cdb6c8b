import type { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * Deleting a tenant (crypto-shredding): when its deletion was requested. From then on every credential of the
 * tenant is refused as if it did not exist, and a worker job shreds it (its data keys and rows) once its tokens
 * are revoked at their providers. The row itself then goes, with everything that cascades from it.
 */
export class TenantDeletion1795540000000 implements MigrationInterface {
  name = 'TenantDeletion1795540000000';

  async up(q: QueryRunner): Promise<void> {
    await q.query(`ALTER TABLE "tenants" ADD "deletion_requested_at" TIMESTAMP WITH TIME ZONE`);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`ALTER TABLE "tenants" DROP COLUMN "deletion_requested_at"`);
  }
}
