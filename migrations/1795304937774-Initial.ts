import type { MigrationInterface, QueryRunner } from 'typeorm';

/** Tenants, admin keys, wrapped data keys, connections (sealed secrets) and the append-only audit log. */
export class Initial1795304937774 implements MigrationInterface {
  name = 'Initial1795304937774';

  async up(q: QueryRunner): Promise<void> {
    await q.query(
      `CREATE TABLE "audit_events" ("id" bigint GENERATED ALWAYS AS IDENTITY NOT NULL, "tenant_id" uuid, "occurred_at" TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(), "action" text NOT NULL, "outcome" text NOT NULL, "actor_type" text NOT NULL, "actor_id" text, "subject_user_id" text, "connection_id" uuid, "provider" text, "request_id" text, "details" jsonb NOT NULL DEFAULT '{}', CONSTRAINT "PK_910f64d901a5c3e9878f0d4a407" PRIMARY KEY ("id"))`,
    );
    await q.query(`CREATE INDEX "ix_audit_events_tenant_id" ON "audit_events"  ("tenant_id", "id") `);
    await q.query(
      `CREATE TABLE "tenants" ("id" uuid NOT NULL, "name" text NOT NULL, "key_backend_type" text NOT NULL DEFAULT 'managed', "created_at" TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(), "updated_at" TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(), CONSTRAINT "PK_53be67a04681c66b87ee27c9321" PRIMARY KEY ("id"))`,
    );
    await q.query(
      `CREATE TABLE "data_keys" ("id" uuid NOT NULL, "tenant_id" uuid NOT NULL, "epoch" integer NOT NULL, "backend_type" text NOT NULL, "key_ref" text NOT NULL, "wrapped" bytea NOT NULL, "created_at" TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(), "retired_at" TIMESTAMP WITH TIME ZONE, CONSTRAINT "PK_75e186bab00acc0d8f955b75cbb" PRIMARY KEY ("id"))`,
    );
    await q.query(`CREATE UNIQUE INDEX "uq_data_keys_tenant_epoch" ON "data_keys"  ("tenant_id", "epoch") `);
    await q.query(
      `CREATE TABLE "connections" ("id" uuid NOT NULL, "tenant_id" uuid NOT NULL, "user_id" text NOT NULL, "provider" text NOT NULL, "type" text NOT NULL, "status" text NOT NULL, "scopes" text array NOT NULL DEFAULT '{}', "expires_at" TIMESTAMP WITH TIME ZONE, "data_key_id" uuid, "secret" bytea, "refresh_token" bytea, "version" integer NOT NULL, "created_at" TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(), "updated_at" TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(), "revoked_at" TIMESTAMP WITH TIME ZONE, CONSTRAINT "PK_0a1f844af3122354cbd487a8d03" PRIMARY KEY ("id"))`,
    );
    await q.query(`CREATE INDEX "ix_connections_tenant_user" ON "connections"  ("tenant_id", "user_id") `);
    await q.query(
      `CREATE UNIQUE INDEX "uq_connections_live" ON "connections"  ("tenant_id", "user_id", "provider") WHERE "revoked_at" IS NULL`,
    );
    await q.query(
      `CREATE TABLE "admin_keys" ("id" uuid NOT NULL, "tenant_id" uuid, "name" text NOT NULL, "role" text NOT NULL, "key_hash" bytea NOT NULL, "created_at" TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(), "revoked_at" TIMESTAMP WITH TIME ZONE, CONSTRAINT "PK_4622859d2dc71470144026c1a1d" PRIMARY KEY ("id"))`,
    );
    await q.query(`CREATE UNIQUE INDEX "uq_admin_keys_key_hash" ON "admin_keys"  ("key_hash") `);
    await q.query(
      `ALTER TABLE "data_keys" ADD CONSTRAINT "FK_85ad4e621ec80ed39d73d0b5a97" FOREIGN KEY ("tenant_id") REFERENCES "tenants"("id") ON DELETE CASCADE ON UPDATE NO ACTION`,
    );
    await q.query(
      `ALTER TABLE "connections" ADD CONSTRAINT "FK_2e37e3b97bf0ae3c7575a39fd4a" FOREIGN KEY ("tenant_id") REFERENCES "tenants"("id") ON DELETE CASCADE ON UPDATE NO ACTION`,
    );
    await q.query(
      `ALTER TABLE "connections" ADD CONSTRAINT "FK_9a7603a81bb922840b770aab289" FOREIGN KEY ("data_key_id") REFERENCES "data_keys"("id") ON DELETE RESTRICT ON UPDATE NO ACTION`,
    );
    await q.query(
      `ALTER TABLE "admin_keys" ADD CONSTRAINT "FK_c441fb445790f8ac41a6da5c853" FOREIGN KEY ("tenant_id") REFERENCES "tenants"("id") ON DELETE CASCADE ON UPDATE NO ACTION`,
    );
    // Audit events are append-only, enforced here rather than by good intentions.
    await q.query(`CREATE FUNCTION custos_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN RAISE EXCEPTION 'audit_events is append-only' USING ERRCODE = 'insufficient_privilege'; END $$`);
    await q.query(`CREATE TRIGGER audit_events_no_update_delete BEFORE UPDATE OR DELETE ON "audit_events"
      FOR EACH ROW EXECUTE FUNCTION custos_audit_append_only()`);
    await q.query(`CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON "audit_events"
      FOR EACH STATEMENT EXECUTE FUNCTION custos_audit_append_only()`);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`DROP TABLE "audit_events"`);
    await q.query(`DROP FUNCTION custos_audit_append_only()`);
    await q.query(`DROP TABLE "connections"`);
    await q.query(`DROP TABLE "data_keys"`);
    await q.query(`DROP TABLE "admin_keys"`);
    await q.query(`DROP TABLE "tenants"`);
  }
}
