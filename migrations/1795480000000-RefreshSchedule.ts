import type { MigrationInterface, QueryRunner } from 'typeorm';

/** Refresh-ahead due times and backoff state per connection; existing tokens are scheduled at once. */
export class RefreshSchedule1795480000000 implements MigrationInterface {
  name = 'RefreshSchedule1795480000000';

  async up(q: QueryRunner): Promise<void> {
    await q.query(`ALTER TABLE "connections" ADD "refresh_due_at" TIMESTAMP WITH TIME ZONE`);
    await q.query(`ALTER TABLE "connections" ADD "refresh_failures" integer NOT NULL DEFAULT '0'`);
    await q.query(`ALTER TABLE "connections" ADD "refresh_retry_at" TIMESTAMP WITH TIME ZONE`);
    await q.query(
      `CREATE INDEX "ix_connections_refresh_due" ON "connections"  ("refresh_due_at") WHERE "refresh_due_at" IS NOT NULL`,
    );
    // Tokens stored before this migration: due a minute before they expire.
    await q.query(
      `UPDATE "connections" SET "refresh_due_at" = "expires_at" - interval '60 seconds'
        WHERE "type" = 'oauth2' AND "refresh_token" IS NOT NULL AND "expires_at" IS NOT NULL AND "revoked_at" IS NULL`,
    );
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`DROP INDEX "ix_connections_refresh_due"`);
    await q.query(`ALTER TABLE "connections" DROP COLUMN "refresh_retry_at"`);
    await q.query(`ALTER TABLE "connections" DROP COLUMN "refresh_failures"`);
    await q.query(`ALTER TABLE "connections" DROP COLUMN "refresh_due_at"`);
  }
}
