import type { MigrationInterface, QueryRunner } from 'typeorm';

/** The provider's id of a connected account, when the connect flow learns it. */
export class ConnectionExternalAccount1795460000000 implements MigrationInterface {
  name = 'ConnectionExternalAccount1795460000000';

  async up(q: QueryRunner): Promise<void> {
    await q.query(`ALTER TABLE "connections" ADD "external_account_id" text`);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`ALTER TABLE "connections" DROP COLUMN "external_account_id"`);
  }
}
