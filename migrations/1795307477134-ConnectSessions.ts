import type { MigrationInterface, QueryRunner } from 'typeorm';

/** Connect sessions: one-time links (token stored hashed) for a user to connect a provider. */
export class ConnectSessions1795307477134 implements MigrationInterface {
  name = 'ConnectSessions1795307477134';

  async up(q: QueryRunner): Promise<void> {
    await q.query(
      `CREATE TABLE "connect_sessions" ("id" uuid NOT NULL, "tenant_id" uuid NOT NULL, "token_hash" bytea NOT NULL, "user_id" text NOT NULL, "provider" text NOT NULL, "scopes" text array NOT NULL DEFAULT '{}', "return_to" text, "status" text NOT NULL, "created_by_type" text NOT NULL, "created_by_id" text, "created_at" TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(), "expires_at" TIMESTAMP WITH TIME ZONE NOT NULL, "completed_at" TIMESTAMP WITH TIME ZONE, CONSTRAINT "PK_982053319b186a5483cb7be9321" PRIMARY KEY ("id"))`,
    );
    await q.query(
      `CREATE UNIQUE INDEX "uq_connect_sessions_token_hash" ON "connect_sessions"  ("token_hash")`,
    );
    await q.query(
      `CREATE INDEX "ix_connect_sessions_tenant" ON "connect_sessions"  ("tenant_id", "created_at")`,
    );
    await q.query(
      `ALTER TABLE "connect_sessions" ADD CONSTRAINT "FK_98ab657338a39eaa0268b5634b7" FOREIGN KEY ("tenant_id") REFERENCES "tenants"("id") ON DELETE CASCADE ON UPDATE NO ACTION`,
    );
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`DROP TABLE "connect_sessions"`);
  }
}
