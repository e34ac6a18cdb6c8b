/**
 * The console's read-only views that no domain service offers yet, each confined to one tenant by its first
 * parameter: a page of the tenant's connections across users (filters, keyset paging) with their status
 * counts, the audit trail with every filter the console has, the credential releases and denials
 * over time and by connector and provider, and the seal status of the tenant's chain. Nothing here writes;
 * every change the console makes goes through the owning domain's service.
 *
 * These statements read tables that belong to connections/ and audit/; they sit here, next to their one
 * caller, until those domains grow the same queries (see docs/console.md).
 */
import { Inject, Injectable } from '@nestjs/common';
import { DataSource } from 'typeorm';
import type { AuditRow } from '../audit/audit.repository.js';
import type { AuditEventView } from '../audit/audit.service.js';
import type { ConnectionRow } from '../connections/connections.repository.js';

/** Which connections a page lists. `live` is every connection not revoked. */
export type ConnectionStatusFilter = 'live' | 'active' | 'expired' | 'needs_reauth' | 'revoked' | 'all';

export interface ConnectionFilter {
  /** Users whose id starts with this. */
  userPrefix?: string;
  provider?: string;
  status: ConnectionStatusFilter;
}

/** Where a page of connections starts: after this row in (user, provider, id) order. */
export interface ConnectionCursor {
  userId: string;
  provider: string;
  id: string;
}

export interface ConnectionCounts {
  live: number;
  needsReauth: number;
  expired: number;
  revoked: number;
}

export type AuditOutcome = AuditEventView['outcome'];

export interface AuditSearch {
  action?: string;
  outcome?: AuditOutcome;
  userId?: string;
  /** Events by the connector (as actor) or about it (details.connectorId). */
  connectorId?: string;
  provider?: string;
  from?: Date;
  to?: Date;
  /** Only events older than this id (the cursor). */
  beforeId?: string;
}

/** Credential releases and denials at the token endpoint in a time range, optionally for one connector/provider. */
export interface ExchangeRange {
  from: Date;
  to: Date;
  connectorId?: string;
  provider?: string;
}

export type Bucket = 'hour' | 'day' | 'week';

export interface ExchangeCount {
  released: number;
  denied: number;
}

export interface SealStatus {
  /** Events linked into the chain. */
  linked: number;
  /** Events covered by a signed checkpoint. */
  checkpointed: number;
  checkpoints: number;
  lastSealedAt: Date | null;
  /** Events written but not linked yet (bounded count). */
  unlinked: number;
}

/**
 * The effective status of ConnectionsService's `connectionView`, in SQL: an OAuth access token past its expiry
 * with no refresh token is expired even while its row still says active.
 */
const EXPIRED_BY_TIME = `(c.status = 'active' AND c.type = 'oauth2' AND c.refresh_token IS NULL AND c.expires_at <= now())`;

const STATUS_WHERE: Record<ConnectionStatusFilter, string> = {
  live: 'c.revoked_at IS NULL',
  active: `c.revoked_at IS NULL AND c.status = 'active' AND NOT ${EXPIRED_BY_TIME}`,
  expired: `c.revoked_at IS NULL AND (c.status = 'expired' OR ${EXPIRED_BY_TIME})`,
  needs_reauth: `c.revoked_at IS NULL AND c.status = 'needs_reauth'`,
  revoked: 'c.revoked_at IS NOT NULL',
  all: 'true',
};

/** The token endpoint's events: one per request, and the folded ones that count many denials (details.count). */
const RELEASED = `(e.action = 'token.exchange' AND e.outcome = 'allowed')`;
const DENIED_COUNT = `CASE WHEN e.action = 'token.exchange' AND e.outcome = 'denied' THEN 1
  WHEN e.action = 'token.exchange.denied_folded'
    THEN CASE WHEN jsonb_typeof(e.details->'count') = 'number' THEN (e.details->>'count')::numeric::bigint ELSE 1 END
  ELSE 0 END`;

/** The unlinked events are counted up to this many. */
export const UNLINKED_COUNT_LIMIT = 10_000;

@Injectable()
export class ConsoleReadsRepository {
  constructor(@Inject(DataSource) private readonly db: DataSource) {}

  /** Up to `limit` of the tenant's connections matching `filter` after `after`, by user, provider and id. */
  connectionsPage(
    tenantId: string,
    filter: ConnectionFilter,
    after: ConnectionCursor | undefined,
    limit: number,
  ): Promise<ConnectionRow[]> {
    const params: unknown[] = [tenantId];
    const where = ['c.tenant_id = $1', STATUS_WHERE[filter.status]];
    if (filter.userPrefix !== undefined) {
      params.push(filter.userPrefix);
      where.push(`starts_with(c.user_id, $${params.length})`);
    }
    if (filter.provider !== undefined) {
      params.push(filter.provider);
      where.push(`c.provider = $${params.length}`);
    }
    if (after) {
      params.push(after.userId, after.provider, after.id);
      const n = params.length;
      where.push(`(c.user_id, c.provider, c.id) > ($${n - 2}, $${n - 1}, $${n}::uuid)`);
    }
    params.push(limit);
    return this.db.query(
      `SELECT c.id, c.tenant_id, c.user_id, c.provider, c.type, c.status, c.scopes, c.expires_at, c.data_key_id,
              c.version, c.created_at, c.updated_at, (c.refresh_token IS NOT NULL) AS has_refresh
         FROM connections c WHERE ${where.join(' AND ')}
        ORDER BY c.user_id, c.provider, c.id LIMIT $${params.length}`,
      params,
    );
  }

  async connectionCounts(tenantId: string): Promise<ConnectionCounts> {
    const [row] = await this.db.query<Record<keyof ConnectionCounts, number>[]>(
      `SELECT count(*) FILTER (WHERE ${STATUS_WHERE.live})::int AS "live",
              count(*) FILTER (WHERE ${STATUS_WHERE.needs_reauth})::int AS "needsReauth",
              count(*) FILTER (WHERE ${STATUS_WHERE.expired})::int AS "expired",
              count(*) FILTER (WHERE ${STATUS_WHERE.revoked})::int AS "revoked"
         FROM connections c WHERE c.tenant_id = $1`,
      [tenantId],
    );
    return row;
  }

  /** Up to `limit` of the tenant's events matching `q`, newest first. */
  auditPage(tenantId: string, q: AuditSearch, limit: number): Promise<AuditRow[]> {
    const params: unknown[] = [tenantId];
    const where = ['e.tenant_id = $1'];
    const add = (value: unknown, clause: (p: string) => string) => {
      params.push(value);
      where.push(clause(`$${params.length}`));
    };
    if (q.beforeId !== undefined) add(q.beforeId, (p) => `e.id < ${p}::bigint`);
    if (q.action !== undefined) add(q.action, (p) => `e.action = ${p}`);
    if (q.outcome !== undefined) add(q.outcome, (p) => `e.outcome = ${p}`);
    if (q.userId !== undefined) add(q.userId, (p) => `e.subject_user_id = ${p}`);
    if (q.provider !== undefined) add(q.provider, (p) => `e.provider = ${p}`);
    if (q.connectorId !== undefined) {
      add(
        q.connectorId,
        (p) => `((e.actor_type = 'connector' AND e.actor_id = ${p}) OR e.details->>'connectorId' = ${p})`,
      );
    }
    if (q.from !== undefined) add(q.from, (p) => `e.occurred_at >= ${p}`);
    if (q.to !== undefined) add(q.to, (p) => `e.occurred_at < ${p}`);
    params.push(limit);
    return this.db.query(
      `SELECT e.id, e.occurred_at, e.action, e.outcome, e.actor_type, e.actor_id, e.subject_user_id,
              e.connection_id, e.provider, e.request_id, e.details
         FROM audit_events e WHERE ${where.join(' AND ')} ORDER BY e.id DESC LIMIT $${params.length}`,
      params,
    );
  }

  /** Releases and denials per bucket (its start, UTC) over the range; buckets with neither are absent. */
  async exchangeSeries(
    tenantId: string,
    range: ExchangeRange,
    bucket: Bucket,
  ): Promise<(ExchangeCount & { at: Date })[]> {
    const { where, params } = this.exchangeWhere(tenantId, range);
    params.push(bucket);
    const rows = await this.db.query<{ at: Date; released: string; denied: string }[]>(
      `SELECT date_trunc($${params.length}, e.occurred_at, 'UTC') AS at,
              count(*) FILTER (WHERE ${RELEASED}) AS released, sum(${DENIED_COUNT}) AS denied
         FROM audit_events e WHERE ${where} GROUP BY 1 ORDER BY 1`,
      params,
    );
    return rows.map((r) => ({ at: r.at, released: Number(r.released), denied: Number(r.denied) }));
  }

  /** Releases and denials over the range per connector (the actor) or per provider, the busiest first. */
  async exchangeBreakdown(
    tenantId: string,
    range: ExchangeRange,
    by: 'connector' | 'provider',
    limit: number,
  ): Promise<(ExchangeCount & { key: string | null })[]> {
    const { where, params } = this.exchangeWhere(tenantId, range);
    const key = by === 'connector' ? 'e.actor_id' : 'e.provider';
    params.push(limit);
    const rows = await this.db.query<{ key: string | null; released: string; denied: string }[]>(
      `SELECT ${key} AS key, count(*) FILTER (WHERE ${RELEASED}) AS released, sum(${DENIED_COUNT}) AS denied
         FROM audit_events e WHERE ${where}
        GROUP BY 1 ORDER BY count(*) FILTER (WHERE ${RELEASED}) + sum(${DENIED_COUNT}) DESC, 1 LIMIT $${params.length}`,
      params,
    );
    return rows.map((r) => ({ key: r.key, released: Number(r.released), denied: Number(r.denied) }));
  }

  private exchangeWhere(tenantId: string, range: ExchangeRange): { where: string; params: unknown[] } {
    const params: unknown[] = [tenantId, range.from, range.to];
    let where = `e.tenant_id = $1 AND e.occurred_at >= $2 AND e.occurred_at < $3
      AND e.action IN ('token.exchange', 'token.exchange.denied_folded')`;
    if (range.connectorId !== undefined) {
      params.push(range.connectorId);
      where += ` AND e.actor_type = 'connector' AND e.actor_id = $${params.length}`;
    }
    if (range.provider !== undefined) {
      params.push(range.provider);
      where += ` AND e.provider = $${params.length}`;
    }
    return { where, params };
  }

  /** Where the tenant's chain stands: linked, checkpointed, when it was last signed, and what waits. */
  async sealStatus(tenantId: string, chain: string): Promise<SealStatus> {
    const [row] = await this.db.query<
      {
        linked: string;
        checkpointed: string;
        checkpoints: string;
        last_sealed_at: Date | null;
        unlinked: number;
      }[]
    >(
      `WITH h AS (SELECT pos, checkpointed_pos, checkpoint_seq FROM audit_chain_heads WHERE chain = $1),
            last_linked AS (SELECT l.event_id FROM audit_chain l JOIN h ON l.chain = $1 AND l.pos = h.pos)
       SELECT coalesce((SELECT pos FROM h), 0)::text AS linked,
              coalesce((SELECT checkpointed_pos FROM h), 0)::text AS checkpointed,
              coalesce((SELECT checkpoint_seq FROM h), 0)::text AS checkpoints,
              (SELECT c.sealed_at FROM audit_checkpoints c WHERE c.chain = $1 ORDER BY c.seq DESC LIMIT 1) AS last_sealed_at,
              (SELECT count(*)::int FROM (
                 SELECT 1 FROM audit_events e
                  WHERE e.tenant_id = $2 AND e.id > coalesce((SELECT event_id FROM last_linked), 0)
                    AND NOT EXISTS (SELECT 1 FROM audit_chain l WHERE l.event_id = e.id)
                  LIMIT ${UNLINKED_COUNT_LIMIT}) x) AS unlinked`,
      [chain, tenantId],
    );
    return {
      linked: Number(row.linked),
      checkpointed: Number(row.checkpointed),
      checkpoints: Number(row.checkpoints),
      lastSealedAt: row.last_sealed_at,
      unlinked: row.unlinked,
    };
  }
}
