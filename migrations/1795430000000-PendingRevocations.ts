import type { MigrationInterface, QueryRunner } from 'typeorm';

/** Tokens of revoked connections still to be revoked at the provider (RFC 7009), retried with backoff. */
export class PendingRevocations1795430000000 implements MigrationInterface {
  name = 'PendingRevocations1795430000000';

  async up(q: QueryRunner): Promise<void> {
    await q.query(
      `CREATE TABLE "pending_revocations" ("id" uuid NOT NULL, "tenant_id" uuid NOT NULL, "connection_id" uuid NOT NULL, "provider" text NOT NULL, "token_type" text NOT NULL, "token" bytea NOT NULL, "position" integer NOT NULL, "attempts" integer NOT NULL DEFAULT '0', "next_attempt_at" TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(), "last_error" text, "created_at" TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(), CONSTRAINT "PK_22433c65b0b72bb5419d4d2df93" PRIMARY KEY ("id"))`,
    );
    await q.query(`CREATE INDEX "ix_pending_revocations_due" ON "pending_revocations"  ("next_attempt_at") `);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`DROP TABLE "pending_revocations"`);
  }
}
