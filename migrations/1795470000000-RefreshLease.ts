import type { MigrationInterface, QueryRunner } from 'typeorm';

/** A lease on a connection's row while its token is refreshed. */
export class RefreshLease1795470000000 implements MigrationInterface {
  name = 'RefreshLease1795470000000';

  async up(q: QueryRunner): Promise<void> {
    await q.query(`ALTER TABLE "connections" ADD "refresh_lease_until" TIMESTAMP WITH TIME ZONE`);
    await q.query(`ALTER TABLE "connections" ADD "refresh_lease_owner" text`);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`ALTER TABLE "connections" DROP COLUMN "refresh_lease_owner"`);
    await q.query(`ALTER TABLE "connections" DROP COLUMN "refresh_lease_until"`);
  }
}
