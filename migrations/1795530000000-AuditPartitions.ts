import type { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * Audit retention (docs/audit-format.md, "Retention"): audit_events becomes a table partitioned by month of
 * occurred_at (UTC), so that an old month is removed by dropping its partition rather than deleting rows, and
 * audit_truncations keeps the signed truncation record each removal leaves per chain.
 *
 * Partitions are named audit_events_YYYY_MM; audit_events_default takes any event whose month has no partition
 * yet (an insert never fails for want of one). custos_audit_partition(month) creates a month's partition
 * unless the default partition already holds events of that month (those stay where they are: retention
 * removes them from there); custos_audit_ensure_partitions(ahead) creates the current month's and the next
 * `ahead` months'. Migrations call them, and so does the worker every hour: the first runs with the owner's
 * rights (SECURITY DEFINER), so the application's role needs no more than EXECUTE.
 *
 * Existing events are copied into the partitioned table with their ids (the sealed chain refers to them).
 * Every partition has the append-only triggers: the row triggers are the partitioned table's, cloned to each
 * partition by PostgreSQL; TRUNCATE triggers are per table, so each partition gets its own.
 */
export class AuditPartitions1795530000000 implements MigrationInterface {
  name = 'AuditPartitions1795530000000';

  async up(q: QueryRunner): Promise<void> {
    await q.query(`ALTER TABLE "audit_events" RENAME TO "audit_events_unpartitioned"`);
    await q.query(
      `ALTER TABLE "audit_events_unpartitioned" RENAME CONSTRAINT "PK_910f64d901a5c3e9878f0d4a407" TO "PK_audit_events_unpartitioned"`,
    );
    await q.query(`ALTER INDEX "ix_audit_events_tenant_id" RENAME TO "ix_audit_events_unpartitioned_tenant"`);
    await q.query(`ALTER INDEX "ix_audit_events_tx" RENAME TO "ix_audit_events_unpartitioned_tx"`);
    await q.query(`ALTER SEQUENCE "audit_events_id_seq" RENAME TO "audit_events_unpartitioned_id_seq"`);

    await q.query(`CREATE TABLE "audit_events" (
      "id" bigint GENERATED ALWAYS AS IDENTITY NOT NULL, "tenant_id" uuid,
      "occurred_at" TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(), "action" text NOT NULL, "outcome" text NOT NULL,
      "actor_type" text NOT NULL, "actor_id" text, "subject_user_id" text, "connection_id" uuid, "provider" text,
      "request_id" text, "details" jsonb NOT NULL DEFAULT '{}', "tx_id" bigint NOT NULL DEFAULT custos_current_tx(),
      CONSTRAINT "PK_audit_events" PRIMARY KEY ("id", "occurred_at")) PARTITION BY RANGE ("occurred_at")`);
    await q.query(`CREATE INDEX "ix_audit_events_tenant_id" ON "audit_events" ("tenant_id", "id")`);
    await q.query(`CREATE INDEX "ix_audit_events_tx" ON "audit_events" ("tx_id", "id")`);
    await q.query(`CREATE TRIGGER "audit_events_no_update_delete" BEFORE UPDATE OR DELETE ON "audit_events"
      FOR EACH ROW EXECUTE FUNCTION custos_append_only()`);
    await q.query(`CREATE TRIGGER "audit_events_no_truncate" BEFORE TRUNCATE ON "audit_events"
      FOR EACH STATEMENT EXECUTE FUNCTION custos_append_only()`);
    await q.query(`CREATE TABLE "audit_events_default" PARTITION OF "audit_events" DEFAULT`);
    await q.query(`CREATE TRIGGER "audit_events_default_no_truncate" BEFORE TRUNCATE ON "audit_events_default"
      FOR EACH STATEMENT EXECUTE FUNCTION custos_append_only()`);

    // SECURITY DEFINER (the owner's rights, a fixed search path): the application's role can keep the coming
    // months' partitions in place without owning the schema, and can do nothing else with it.
    await q.query(`CREATE FUNCTION custos_audit_partition(month date) RETURNS boolean LANGUAGE plpgsql
      SECURITY DEFINER SET search_path FROM CURRENT AS $$
      DECLARE
        start_at timestamptz := date_trunc('month', month::timestamp) AT TIME ZONE 'UTC';
        end_at timestamptz := (date_trunc('month', month::timestamp) + interval '1 month') AT TIME ZONE 'UTC';
        part text := 'audit_events_' || to_char(month, 'YYYY_MM');
      BEGIN
        IF to_regclass(quote_ident(part)) IS NOT NULL THEN RETURN false; END IF;
        IF EXISTS (SELECT 1 FROM audit_events_default WHERE occurred_at >= start_at AND occurred_at < end_at) THEN
          RETURN false;
        END IF;
        EXECUTE format('CREATE TABLE %I PARTITION OF audit_events FOR VALUES FROM (%L) TO (%L)',
          part, start_at, end_at);
        EXECUTE format('CREATE TRIGGER %I BEFORE TRUNCATE ON %I FOR EACH STATEMENT EXECUTE FUNCTION custos_append_only()',
          part || '_no_truncate', part);
        RETURN true;
      END $$`);
    await q.query(`CREATE FUNCTION custos_audit_ensure_partitions(ahead integer) RETURNS integer
      LANGUAGE plpgsql AS $$
      DECLARE
        this_month date := date_trunc('month', now() AT TIME ZONE 'UTC')::date;
        created integer := 0;
      BEGIN
        FOR i IN 0..ahead LOOP
          IF custos_audit_partition((this_month + make_interval(months => i))::date) THEN
            created := created + 1;
          END IF;
        END LOOP;
        RETURN created;
      END $$`);

    // The months the existing events occurred in, then the current one and the next three.
    await q.query(`SELECT custos_audit_partition(m::date) FROM generate_series(
        date_trunc('month', (SELECT min(occurred_at) FROM audit_events_unpartitioned) AT TIME ZONE 'UTC'),
        date_trunc('month', now() AT TIME ZONE 'UTC'), interval '1 month') AS m`);
    await q.query(`SELECT custos_audit_ensure_partitions(3)`);
    await q.query(`INSERT INTO "audit_events" ("id", "tenant_id", "occurred_at", "action", "outcome", "actor_type",
        "actor_id", "subject_user_id", "connection_id", "provider", "request_id", "details", "tx_id")
      OVERRIDING SYSTEM VALUE
      SELECT "id", "tenant_id", "occurred_at", "action", "outcome", "actor_type", "actor_id", "subject_user_id",
             "connection_id", "provider", "request_id", "details", "tx_id"
        FROM "audit_events_unpartitioned" ORDER BY "id"`);
    await q.query(`SELECT setval(pg_get_serial_sequence('audit_events', 'id'),
      (SELECT max("id") FROM "audit_events_unpartitioned")) WHERE EXISTS (SELECT 1 FROM "audit_events_unpartitioned")`);
    await q.query(`DROP TABLE "audit_events_unpartitioned"`);

    // One signed truncation record per chain and retention run (docs/audit-format.md); append-only.
    await q.query(`CREATE TABLE "audit_truncations" ("chain" text NOT NULL, "seq" bigint NOT NULL,
      "tenant_id" uuid, "through_pos" bigint NOT NULL, "next_seq" bigint NOT NULL,
      "cutoff" TIMESTAMP WITH TIME ZONE NOT NULL, "truncated_at" TIMESTAMP WITH TIME ZONE NOT NULL,
      "kid" text NOT NULL, "body" text NOT NULL, "sig" text NOT NULL,
      CONSTRAINT "PK_audit_truncations" PRIMARY KEY ("chain", "seq"))`);
    await q.query(`CREATE TRIGGER "audit_truncations_no_update_delete" BEFORE UPDATE OR DELETE ON "audit_truncations"
      FOR EACH ROW EXECUTE FUNCTION custos_append_only()`);
    await q.query(`CREATE TRIGGER "audit_truncations_no_truncate" BEFORE TRUNCATE ON "audit_truncations"
      FOR EACH STATEMENT EXECUTE FUNCTION custos_append_only()`);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`DROP TABLE "audit_truncations"`);
    await q.query(`CREATE TABLE "audit_events_unpartitioned" (LIKE "audit_events" INCLUDING DEFAULTS)`);
    await q.query(`INSERT INTO "audit_events_unpartitioned" SELECT * FROM "audit_events"`);
    await q.query(`DROP TABLE "audit_events"`);
    await q.query(`DROP FUNCTION custos_audit_ensure_partitions(integer)`);
    await q.query(`DROP FUNCTION custos_audit_partition(date)`);
    await q.query(`ALTER TABLE "audit_events_unpartitioned" RENAME TO "audit_events"`);
    await q.query(`ALTER TABLE "audit_events" ALTER "id" ADD GENERATED ALWAYS AS IDENTITY`);
    await q.query(`SELECT setval(pg_get_serial_sequence('audit_events', 'id'), max("id")) FROM "audit_events"
      HAVING max("id") IS NOT NULL`);
    await q.query(
      `ALTER TABLE "audit_events" ADD CONSTRAINT "PK_910f64d901a5c3e9878f0d4a407" PRIMARY KEY ("id")`,
    );
    await q.query(`CREATE INDEX "ix_audit_events_tenant_id" ON "audit_events" ("tenant_id", "id")`);
    await q.query(`CREATE INDEX "ix_audit_events_tx" ON "audit_events" ("tx_id", "id")`);
    await q.query(`CREATE TRIGGER "audit_events_no_update_delete" BEFORE UPDATE OR DELETE ON "audit_events"
      FOR EACH ROW EXECUTE FUNCTION custos_append_only()`);
    await q.query(`CREATE TRIGGER "audit_events_no_truncate" BEFORE TRUNCATE ON "audit_events"
      FOR EACH STATEMENT EXECUTE FUNCTION custos_append_only()`);
  }
}
