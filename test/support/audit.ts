/**
 * The audit trail in tests. Waiting for the sealer: it links only events whose transactions are older than every
 * transaction still running in the whole PostgreSQL cluster, and the other Jest worker's tests run theirs on the
 * same cluster: one run may rightly link nothing yet. So tests run the sealer until their own chains are done.
 * And what someone with direct database access can do to the trail.
 */
import { Client } from 'pg';
import { AuditSealer } from '../../src/audit/audit-sealer.js';
import type { TestApp } from './app.js';
import { databaseUrlFor, workerDatabaseName } from './env.js';

/** Runs SQL as the superuser with triggers off: what someone with direct database access can do. */
export async function asSuperuser(sql: string, params: unknown[] = []): Promise<void> {
  const c = new Client({ connectionString: databaseUrlFor(workerDatabaseName()) });
  await c.connect();
  try {
    await c.query('BEGIN');
    await c.query('SET LOCAL session_replication_role = replica');
    await c.query(sql, params);
    await c.query('COMMIT');
  } finally {
    await c.end();
  }
}

/** Events of these tenants (null: the platform) not linked yet, and links not covered by a checkpoint yet. */
export async function unsealed(app: TestApp, tenantIds: (string | null)[]): Promise<number> {
  const ids = tenantIds.filter((t): t is string => t !== null);
  const platform = tenantIds.includes(null);
  const [{ unlinked, unsigned }] = await app.custos.runtime.dataSource.query(
    `SELECT (SELECT count(*)::int FROM audit_events e
              WHERE (e.tenant_id = ANY($1::uuid[]) OR ($2 AND e.tenant_id IS NULL))
                AND NOT EXISTS (SELECT 1 FROM audit_chain l WHERE l.event_id = e.id)) AS unlinked,
            (SELECT coalesce(sum(pos - checkpointed_pos), 0)::int FROM audit_chain_heads
              WHERE tenant_id = ANY($1::uuid[]) OR ($2 AND chain = 'platform')) AS unsigned`,
    [ids, platform],
  );
  return Number(unlinked) + Number(unsigned);
}

/** Runs the sealer until every event of these tenants is linked and signed (20 s at most). */
export async function sealFor(app: TestApp, tenantIds: (string | null)[], ms = 20_000): Promise<void> {
  const sealer = app.custos.app.get(AuditSealer);
  const deadline = Date.now() + ms;
  for (;;) {
    await sealer.sealOnce();
    if ((await unsealed(app, tenantIds)) === 0) return;
    if (Date.now() > deadline) throw new Error('the sealer did not seal these tenants’ events in time');
    await new Promise((r) => setTimeout(r, 50));
  }
}

/**
 * Drops a test's trigger on audit_events. audit_events is partitioned, and DROP TRIGGER removes the partitions'
 * copies (locking each partition) before the trigger on audit_events itself: against a transaction of the
 * application that already wrote to audit_events and routes another row to a partition, that order deadlocks.
 * Locking audit_events first, in the same transaction, waits for such a transaction instead.
 */
export async function dropAuditTrigger(
  db: { transaction<T>(fn: (m: { query(sql: string): Promise<unknown> }) => Promise<T>): Promise<T> },
  name: string,
): Promise<void> {
  await db.transaction(async (m) => {
    await m.query('LOCK TABLE audit_events IN ACCESS EXCLUSIVE MODE');
    await m.query(`DROP TRIGGER ${name} ON audit_events`);
  });
}
