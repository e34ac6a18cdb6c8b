/**
 * Batches the token endpoint's decision reads. Concurrent requests' lookups (connector state, identity
 * provider version, connection) go to PostgreSQL together as one statement over unnest() arrays, so under
 * load a round trip serves many requests: fewer statements, fewer socket writes and fewer wake-ups of
 * database backends than one query per request. At most two batches are in flight; requests that arrive
 * meanwhile form the next one. A failed batch fails each of its requests (the endpoint answers 503).
 */
import { Inject, Injectable } from '@nestjs/common';
import { DataSource } from 'typeorm';
import type { ConnectionStatus, ConnectionType } from '../connections/connection.entity.js';
import { preparedQuery } from '../database/sql.js';

export interface DecisionKey {
  connectorId: string;
  userId: string;
  provider: string;
  /** The subject token's issuer (null for trusted user ids). */
  issuer: string | null;
}

export interface DecisionRow {
  connector_version: number | null;
  connector_enabled: boolean;
  idp_updated_at: Date | null;
  id: string | null;
  type: ConnectionType | null;
  status: ConnectionStatus | null;
  scopes: string[] | null;
  expires_at: Date | null;
  secret: Buffer | null;
  has_refresh: boolean | null;
}

interface Pending {
  key: DecisionKey;
  resolve(row: DecisionRow | undefined): void;
  reject(err: unknown): void;
}

const MAX_BATCH = 200;
const MAX_IN_FLIGHT = 2;

const BATCH_SQL = `SELECT q.ord, k.version AS connector_version, (k.disabled_at IS NULL) AS connector_enabled,
    (SELECT i.updated_at FROM identity_providers i WHERE i.tenant_id = k.tenant_id AND i.issuer = q.issuer)
      AS idp_updated_at,
    c.id, c.type, c.status, c.scopes, c.expires_at, c.secret, c.has_refresh
  FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[]) WITH ORDINALITY AS q(connector_id, user_id, provider, issuer, ord)
  JOIN connectors k ON k.id = q.connector_id
  LEFT JOIN LATERAL (
    -- LATERAL keeps the lookup a per-row probe of the live-connection index on all three columns, whatever
    -- the planner believes about the table.
    SELECT c.id, c.type, c.status, c.scopes, c.expires_at, c.secret, (c.refresh_token IS NOT NULL) AS has_refresh
      FROM connections c
     WHERE c.tenant_id = k.tenant_id AND c.user_id = q.user_id AND c.provider = q.provider AND c.revoked_at IS NULL
     LIMIT 1) c ON true`;

@Injectable()
export class DecisionBatcher {
  private queue: Pending[] = [];
  private inFlight = 0;
  private scheduled = false;
  /** Statements issued and lookups served (for tests and benchmarks). */
  readonly stats = { batches: 0, lookups: 0 };

  constructor(@Inject(DataSource) private readonly db: DataSource) {}

  /** The decision row for one request; undefined when the connector no longer exists. */
  lookup(key: DecisionKey): Promise<DecisionRow | undefined> {
    return new Promise((resolve, reject) => {
      this.queue.push({ key, resolve, reject });
      this.schedule();
    });
  }

  private schedule(): void {
    if (this.scheduled || this.inFlight >= MAX_IN_FLIGHT || this.queue.length === 0) return;
    this.scheduled = true;
    // Let the requests of this turn of the event loop join the batch.
    setImmediate(() => {
      this.scheduled = false;
      void this.flush();
    });
  }

  private async flush(): Promise<void> {
    if (this.inFlight >= MAX_IN_FLIGHT || this.queue.length === 0) return;
    const batch = this.queue.splice(0, MAX_BATCH);
    this.inFlight++;
    try {
      const rows = await preparedQuery<DecisionRow & { ord: string }>(
        this.db,
        'custos_decisions_v3',
        BATCH_SQL,
        [
          batch.map((p) => p.key.connectorId),
          batch.map((p) => p.key.userId),
          batch.map((p) => p.key.provider),
          batch.map((p) => p.key.issuer),
        ],
      );
      this.stats.batches++;
      this.stats.lookups += batch.length;
      const byOrd = new Map<number, DecisionRow>();
      for (const r of rows) byOrd.set(Number(r.ord), r);
      batch.forEach((p, i) => p.resolve(byOrd.get(i + 1)));
    } catch (err) {
      for (const p of batch) p.reject(err);
    } finally {
      this.inFlight--;
      this.schedule();
    }
  }
}
