/**
 * Every statement on audit_events, and with them the only INSERTs into it anywhere: one event on its own or in
 * the caller's transaction, one event written with another table's UPDATE in one statement (a token refresh),
 * the group commit's batched unnest insert (prepared), and the admin API's list. Errors are passed on as the
 * database gave them: AuditService and AuditBatcher decide what a failed write means for their callers.
 */
import { Inject, Injectable } from '@nestjs/common';
import { DataSource, type EntityManager } from 'typeorm';
import { preparedQuery, returned } from '../database/sql.js';
import type { ActorType, AuditOutcome } from './audit-event.entity.js';

/**
 * An event as the values of the audit_events columns, in the order every INSERT here lists them (tenant_id,
 * action, outcome, actor_type, actor_id, subject_user_id, connection_id, provider, request_id, details),
 * details as JSON text.
 */
export type AuditRowValues = [
  tenantId: string | null,
  action: string,
  outcome: AuditOutcome,
  actorType: ActorType,
  actorId: string | null,
  subjectUserId: string | null,
  connectionId: string | null,
  provider: string | null,
  requestId: string | null,
  details: string,
];

/** An event as the admin API reads it. */
export interface AuditRow {
  id: string;
  occurred_at: Date;
  action: string;
  outcome: AuditOutcome;
  actor_type: ActorType;
  actor_id: string | null;
  subject_user_id: string | null;
  connection_id: string | null;
  provider: string | null;
  request_id: string | null;
  details: Record<string, unknown>;
}

/**
 * An event as the sealer and the export read it: the occurrence time as text at full (microsecond) precision
 * in UTC, ids as text, so that what is hashed is exactly what the database holds.
 */
export interface SealRow {
  id: string;
  tx_id: string;
  tenant_id: string | null;
  occurred_at: string;
  action: string;
  outcome: string;
  actor_type: string;
  actor_id: string | null;
  subject_user_id: string | null;
  connection_id: string | null;
  provider: string | null;
  request_id: string | null;
  details: unknown;
}

export const sealColumns = (e: string) => `${e}.id::text AS id, ${e}.tx_id::text AS tx_id, ${e}.tenant_id,
  to_char(${e}.occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS occurred_at, ${e}.action,
  ${e}.outcome, ${e}.actor_type, ${e}.actor_id, ${e}.subject_user_id, ${e}.connection_id, ${e}.provider,
  ${e}.request_id, ${e}.details`;

/** Which of a tenant's events a page holds, newest first. */
export interface AuditFilter {
  /** Only events older than this id (the cursor). */
  beforeId?: string;
  action?: string;
  userId?: string;
}

const insertSql = `INSERT INTO audit_events
  (tenant_id, action, outcome, actor_type, actor_id, subject_user_id, connection_id, provider, request_id, details)
  VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`;

// unnest() keeps the statement text constant whatever the batch size, so PostgreSQL plans it once.
const insertBatchSql = `INSERT INTO audit_events
  (tenant_id, action, outcome, actor_type, actor_id, subject_user_id, connection_id, provider, request_id, details)
  SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::uuid[],
                       $8::text[], $9::text[], $10::jsonb[])`;

/**
 * Each connection's latest released credential ($1 the tenant, $2 the connections' ids): one probe per
 * connection and month partition of ix_audit_events_connection_release (a partial index on exactly these
 * events), whatever the size of the trail. Exported for the test that reads its plan.
 */
export const LAST_RELEASES_SQL = `SELECT c.id AS connection_id, e.occurred_at, e.actor_id
  FROM unnest($2::uuid[]) AS c(id)
  CROSS JOIN LATERAL (
    SELECT occurred_at, actor_id FROM audit_events
     WHERE connection_id = c.id AND action = 'token.exchange' AND outcome = 'allowed' AND tenant_id = $1
     ORDER BY occurred_at DESC LIMIT 1) e`;

@Injectable()
export class AuditRepository {
  constructor(@Inject(DataSource) private readonly db: DataSource) {}

  /** Writes one event inside the caller's transaction, or on its own when no manager is given. */
  async insert(values: AuditRowValues, m?: EntityManager): Promise<void> {
    await (m ?? this.db.manager).query(insertSql, values);
  }

  /**
   * Runs `update` (an UPDATE … RETURNING that writes at most one row) and writes the event in the same
   * statement, only when the update wrote its row. Returns whether it did.
   */
  async insertWithUpdate(update: string, params: unknown[], values: AuditRowValues): Promise<boolean> {
    const n = params.length;
    const p = (i: number, type: string) => `$${n + i}::${type}`;
    const rows = returned<{ id: string }>(
      await this.db.query(
        `WITH written AS (${update})
         INSERT INTO audit_events
           (tenant_id, action, outcome, actor_type, actor_id, subject_user_id, connection_id, provider, request_id, details)
         SELECT ${p(1, 'uuid')}, ${p(2, 'text')}, ${p(3, 'text')}, ${p(4, 'text')}, ${p(5, 'text')}, ${p(6, 'text')},
                ${p(7, 'uuid')}, ${p(8, 'text')}, ${p(9, 'text')}, ${p(10, 'jsonb')}
           FROM written RETURNING id`,
        [...params, ...values],
      ),
    );
    return rows.length > 0;
  }

  /**
   * The group commit's INSERT: one array per column (in AuditRowValues' order), one element per event, as a
   * named prepared statement. Empty arrays write nothing (the readiness probe).
   */
  async insertBatch(columns: unknown[][], signal: AbortSignal): Promise<void> {
    await preparedQuery(this.db, 'custos_audit_batch_v1', insertBatchSql, columns, signal);
  }

  /**
   * The next events to seal after the cursor (tx_id, id), in that order: only those inserted by transactions
   * older than `horizon` (the oldest transaction still running when the sealer looked), which have all ended,
   * so no event can later appear before the cursor. An event that already has a link (only a hand-made one
   * can) is left out rather than stopping the sealer: the export shows the tampering.
   */
  sealBatch(
    m: EntityManager,
    lastTx: string,
    lastId: string,
    horizon: string,
    limit: number,
  ): Promise<SealRow[]> {
    return m.query(
      `SELECT ${sealColumns('e')} FROM audit_events e
        WHERE (e.tx_id, e.id) > ($1::bigint, $2::bigint) AND e.tx_id < $3::bigint
          AND NOT EXISTS (SELECT 1 FROM audit_chain l WHERE l.event_id = e.id)
        ORDER BY e.tx_id, e.id LIMIT $4`,
      [lastTx, lastId, horizon, limit],
    );
  }

  /**
   * A chain's events at or before the sealer's cursor that have no place in the chain: rows written into the
   * table behind the sealer's back (the export shows them, and verification fails on them).
   */
  unlinked(
    tenantId: string | null,
    cursor: { lastTx: string; lastId: string },
    range: { from: Date | null; to: Date | null },
  ): Promise<SealRow[]> {
    // `tenant_id = $1` (or IS NULL), not IS NOT DISTINCT FROM: only then does the (tenant_id, id) index
    // confine the scan to this chain's events rather than the whole table.
    const tenant = tenantId === null ? 'e.tenant_id IS NULL' : 'e.tenant_id = $5::uuid';
    return this.db.query(
      `SELECT ${sealColumns('e')} FROM audit_events e
        WHERE ${tenant} AND (e.tx_id, e.id) <= ($1::bigint, $2::bigint)
          AND ($3::timestamptz IS NULL OR e.occurred_at >= $3) AND ($4::timestamptz IS NULL OR e.occurred_at < $4)
          AND NOT EXISTS (SELECT 1 FROM audit_chain l WHERE l.event_id = e.id)
        ORDER BY e.tenant_id, e.id LIMIT 1000`,
      [cursor.lastTx, cursor.lastId, range.from, range.to, ...(tenantId === null ? [] : [tenantId])],
    );
  }

  /**
   * The latest credential release (an allowed `token.exchange`) of each of the tenant's connections in `ids`,
   * for those that have one: when, and the connector's id (LAST_RELEASES_SQL).
   */
  lastReleases(
    tenantId: string,
    connectionIds: string[],
  ): Promise<{ connection_id: string; occurred_at: Date; actor_id: string | null }[]> {
    return this.db.query(LAST_RELEASES_SQL, [tenantId, connectionIds]);
  }

  /** Up to `limit` of the tenant's (null: the platform's) events matching the filter, newest first. */
  page(tenantId: string | null, filter: AuditFilter, limit: number): Promise<AuditRow[]> {
    const params: unknown[] = tenantId === null ? [] : [tenantId];
    let where = tenantId === null ? 'tenant_id IS NULL' : 'tenant_id = $1';
    if (filter.beforeId) {
      params.push(filter.beforeId);
      where += ` AND id < $${params.length}`;
    }
    if (filter.action) {
      params.push(filter.action);
      where += ` AND action = $${params.length}`;
    }
    if (filter.userId) {
      params.push(filter.userId);
      where += ` AND subject_user_id = $${params.length}`;
    }
    params.push(limit);
    return this.db.query(
      `SELECT id, occurred_at, action, outcome, actor_type, actor_id, subject_user_id, connection_id, provider,
              request_id, details
         FROM audit_events WHERE ${where} ORDER BY id DESC LIMIT $${params.length}`,
      params,
    );
  }
}
