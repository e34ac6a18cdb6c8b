import type { MigrationInterface, QueryRunner } from 'typeorm';

/** Single use of private_key_jwt client assertions: accepted `jti`s (hashed) until they expire. */
export class ClientAssertionsUsed1795390000000 implements MigrationInterface {
  name = 'ClientAssertionsUsed1795390000000';

  async up(q: QueryRunner): Promise<void> {
    await q.query(
      `CREATE TABLE "client_assertions_used" ("connector_id" uuid NOT NULL, "jti_hash" bytea NOT NULL, "expires_at" TIMESTAMP WITH TIME ZONE NOT NULL, CONSTRAINT "PK_9dbb39ccae6275e2e2844264728" PRIMARY KEY ("connector_id", "jti_hash"))`,
    );
    await q.query(
      `CREATE INDEX "ix_client_assertions_used_expires_at" ON "client_assertions_used"  ("expires_at") `,
    );
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`DROP TABLE "client_assertions_used"`);
  }
}
