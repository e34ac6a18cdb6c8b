import type { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * The sealed audit trail (docs/audit-format.md). Every event records the id of the transaction that inserted
 * it (`tx_id`), so the sealer can take events in a commit-safe order: only those whose transactions are older
 * than every transaction still running, ordered by (tx_id, id). The chain links, the chain heads, the signed
 * checkpoints, the sealer's cursor and the Ed25519 signing keys (private part sealed by the key backend) get
 * tables of their own. Links and checkpoints are append-only like the events.
 */
export class SealedAudit1795510000000 implements MigrationInterface {
  name = 'SealedAudit1795510000000';

  async up(q: QueryRunner): Promise<void> {
    // A function rather than the expression as the default: the column's default then reads back exactly as
    // the entity declares it.
    await q.query(`CREATE FUNCTION custos_current_tx() RETURNS bigint LANGUAGE sql VOLATILE PARALLEL UNSAFE
      AS 'SELECT pg_current_xact_id()::text::bigint'`);
    await q.query(`ALTER TABLE "audit_events" ADD "tx_id" bigint NOT NULL DEFAULT custos_current_tx()`);
    await q.query(`CREATE INDEX "ix_audit_events_tx" ON "audit_events" ("tx_id", "id")`);
    await q.query(`CREATE FUNCTION custos_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN RAISE EXCEPTION '% is append-only', TG_TABLE_NAME USING ERRCODE = 'insufficient_privilege'; END $$`);

    await q.query(`CREATE TABLE "audit_chain" ("event_id" bigint NOT NULL, "chain" text NOT NULL,
      "pos" bigint NOT NULL, "head" bytea NOT NULL, CONSTRAINT "PK_audit_chain" PRIMARY KEY ("event_id"))`);
    await q.query(`CREATE UNIQUE INDEX "uq_audit_chain_pos" ON "audit_chain" ("chain", "pos")`);

    await q.query(`CREATE TABLE "audit_chain_heads" ("chain" text NOT NULL, "tenant_id" uuid,
      "pos" bigint NOT NULL, "head" bytea NOT NULL, "checkpointed_pos" bigint NOT NULL DEFAULT 0,
      "checkpoint_seq" bigint NOT NULL DEFAULT 0, "checkpoint_head" bytea,
      CONSTRAINT "PK_audit_chain_heads" PRIMARY KEY ("chain"))`);

    await q.query(`CREATE TABLE "audit_checkpoints" ("chain" text NOT NULL, "seq" bigint NOT NULL,
      "tenant_id" uuid, "first_pos" bigint NOT NULL, "last_pos" bigint NOT NULL,
      "first_at" TIMESTAMP WITH TIME ZONE NOT NULL, "last_at" TIMESTAMP WITH TIME ZONE NOT NULL,
      "sealed_at" TIMESTAMP WITH TIME ZONE NOT NULL, "kid" text NOT NULL, "body" text NOT NULL, "sig" text NOT NULL,
      CONSTRAINT "PK_audit_checkpoints" PRIMARY KEY ("chain", "seq"))`);
    await q.query(`CREATE INDEX "ix_audit_checkpoints_last_at" ON "audit_checkpoints" ("chain", "last_at")`);

    await q.query(`CREATE TABLE "audit_seal_state" ("id" smallint NOT NULL, "last_tx" bigint NOT NULL,
      "last_id" bigint NOT NULL, CONSTRAINT "PK_audit_seal_state" PRIMARY KEY ("id"),
      CONSTRAINT "ck_audit_seal_state_single" CHECK ("id" = 1))`);
    await q.query(`INSERT INTO "audit_seal_state" ("id", "last_tx", "last_id") VALUES (1, 0, 0)`);

    await q.query(`CREATE TABLE "audit_signing_keys" ("kid" text NOT NULL, "chain" text NOT NULL,
      "tenant_id" uuid, "public_jwk" jsonb NOT NULL, "sealed_key" bytea NOT NULL,
      "valid_from" TIMESTAMP WITH TIME ZONE NOT NULL, "valid_until" TIMESTAMP WITH TIME ZONE,
      "created_at" TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(),
      CONSTRAINT "PK_audit_signing_keys" PRIMARY KEY ("kid"))`);
    await q.query(
      `CREATE INDEX "ix_audit_signing_keys_chain" ON "audit_signing_keys" ("chain", "valid_from")`,
    );

    for (const table of ['audit_chain', 'audit_checkpoints']) {
      await q.query(`CREATE TRIGGER "${table}_no_update_delete" BEFORE UPDATE OR DELETE ON "${table}"
        FOR EACH ROW EXECUTE FUNCTION custos_append_only()`);
      await q.query(`CREATE TRIGGER "${table}_no_truncate" BEFORE TRUNCATE ON "${table}"
        FOR EACH STATEMENT EXECUTE FUNCTION custos_append_only()`);
    }
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`DROP TABLE "audit_signing_keys"`);
    await q.query(`DROP TABLE "audit_seal_state"`);
    await q.query(`DROP TABLE "audit_checkpoints"`);
    await q.query(`DROP TABLE "audit_chain_heads"`);
    await q.query(`DROP TABLE "audit_chain"`);
    await q.query(`DROP FUNCTION custos_append_only()`);
    await q.query(`DROP INDEX "ix_audit_events_tx"`);
    await q.query(`ALTER TABLE "audit_events" DROP COLUMN "tx_id"`);
    await q.query(`DROP FUNCTION custos_current_tx()`);
  }
}
