import type { MigrationInterface, QueryRunner } from 'typeorm';

const RELEASE_INDEX = 'ix_audit_events_connection_release';
const RELEASE_COLUMNS = `("connection_id", "occurred_at") WHERE "action" = 'token.exchange' AND "outcome" = 'allowed'`;

/**
 * The end user's "my connections" portal: its sessions (a one-time link, then a browser session; only hashes
 * of the link's token and of the cookie are stored), and an index for "last used": each connection's latest
 * released credential (an allowed token.exchange event).
 *
 * audit_events takes every release before the credential goes out, so the index must not block its writes
 * while it is built: it is created on the partitioned table alone (ON ONLY, invalid until complete), then
 * CONCURRENTLY on each partition and attached; once every partition's is attached it is valid, and partitions
 * created later get it from the parent. That cannot run in a transaction, so this migration runs without one
 * and each of its steps can run again after an interruption (the table's creation is its own transaction).
 */
export class PortalSessions1795580000000 implements MigrationInterface {
  name = 'PortalSessions1795580000000';
  transaction = false;

  async up(q: QueryRunner): Promise<void> {
    const [{ exists }] = (await q.query(`SELECT to_regclass('portal_sessions') IS NOT NULL AS exists`)) as {
      exists: boolean;
    }[];
    if (!exists) {
      await q.startTransaction();
      try {
        await q.query(
          `CREATE TABLE "portal_sessions" ("id" uuid NOT NULL, "tenant_id" uuid NOT NULL, "user_id" text NOT NULL, "token_hash" bytea NOT NULL, "return_to" text, "created_by_type" text NOT NULL, "created_by_id" text, "created_at" TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(), "link_expires_at" TIMESTAMP WITH TIME ZONE NOT NULL, "opened_at" TIMESTAMP WITH TIME ZONE, "browser_hash" bytea, "last_seen_at" TIMESTAMP WITH TIME ZONE, "expires_at" TIMESTAMP WITH TIME ZONE NOT NULL, "signed_in_at" TIMESTAMP WITH TIME ZONE, "login_state_hash" bytea, "login_secrets" bytea, CONSTRAINT "PK_portal_sessions" PRIMARY KEY ("id"))`,
        );
        await q.query(
          `CREATE UNIQUE INDEX "uq_portal_sessions_token_hash" ON "portal_sessions" ("token_hash")`,
        );
        await q.query(
          `CREATE UNIQUE INDEX "uq_portal_sessions_browser_hash" ON "portal_sessions" ("browser_hash") WHERE "browser_hash" IS NOT NULL`,
        );
        await q.query(`CREATE INDEX "ix_portal_sessions_expires_at" ON "portal_sessions" ("expires_at")`);
        await q.query(
          `CREATE UNIQUE INDEX "uq_portal_sessions_login_state_hash" ON "portal_sessions" ("login_state_hash") WHERE "login_state_hash" IS NOT NULL`,
        );
        await q.query(
          `ALTER TABLE "portal_sessions" ADD CONSTRAINT "FK_portal_sessions_tenant" FOREIGN KEY ("tenant_id") REFERENCES "tenants"("id") ON DELETE CASCADE ON UPDATE NO ACTION`,
        );
        await q.commitTransaction();
      } catch (err) {
        await q.rollbackTransaction();
        throw err;
      }
    }

    await q.query(`CREATE INDEX IF NOT EXISTS "${RELEASE_INDEX}" ON ONLY "audit_events" ${RELEASE_COLUMNS}`);
    const partitions = (await q.query(
      `SELECT c.relname AS name FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'audit_events'::regclass ORDER BY c.relname`,
    )) as { name: string }[];
    for (const { name } of partitions) {
      // Done already (by an earlier run, or by PostgreSQL for a partition created after the parent's index).
      const [done] = (await q.query(
        `SELECT 1 FROM pg_inherits h JOIN pg_index i ON i.indexrelid = h.inhrelid
          WHERE h.inhparent = to_regclass($1) AND i.indrelid = to_regclass($2)`,
        [`"${RELEASE_INDEX}"`, `"${name}"`],
      )) as unknown[];
      if (done) continue;
      const index = `${name}_connection_release`;
      // An interrupted concurrent build leaves an invalid index behind: it is built again.
      const [state] = (await q.query(
        'SELECT indisvalid AS valid FROM pg_index WHERE indexrelid = to_regclass($1)',
        [`"${index}"`],
      )) as { valid: boolean }[];
      if (state && !state.valid) await q.query(`DROP INDEX CONCURRENTLY "${index}"`);
      if (!state?.valid) {
        await q.query(`CREATE INDEX CONCURRENTLY "${index}" ON "${name}" ${RELEASE_COLUMNS}`);
      }
      await q.query(`ALTER INDEX "${RELEASE_INDEX}" ATTACH PARTITION "${index}"`);
    }
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`DROP INDEX IF EXISTS "${RELEASE_INDEX}"`);
    await q.query(`DROP TABLE IF EXISTS "portal_sessions"`);
  }
}
