/**
 * Every statement on the connections table outside the token endpoint's decision read (decision-query.ts in this
 * folder, one statement over several tables): imports, lists, revocation, expiry, a custom provider's in-use count, and the
 * refresh path (the due list, the lease, the refresh commit, a failure's backoff and the needs_reauth mark).
 * Hot statements stay raw SQL (one round trip each); the refresh commit and its audit event are one
 * statement, through AuditService (the only writer of audit_events).
 */
import { Inject, Injectable } from '@nestjs/common';
import { DataSource, type EntityManager } from 'typeorm';
import { AuditService, type AuditRecord } from '../audit/audit.service.js';
import { returned } from '../database/sql.js';
import type { ConnectionStatus, ConnectionType } from './connection.types.js';

/** A connection as the admin API shows it (no secret columns). */
export interface ConnectionRow {
  id: string;
  tenant_id: string;
  user_id: string;
  provider: string;
  type: ConnectionType;
  status: ConnectionStatus;
  scopes: string[];
  expires_at: Date | null;
  data_key_id: string | null;
  secret: Buffer | null;
  refresh_token: Buffer | null;
  has_refresh: boolean;
  version: number;
  created_at: Date;
  updated_at: Date;
}

/** The columns of a ConnectionRow. */
const columns = `id, tenant_id, user_id, provider, type, status, scopes, expires_at, data_key_id, version,
  created_at, updated_at, (refresh_token IS NOT NULL) AS has_refresh`;

/** A connection row with its sealed secrets. */
export type SealedConnectionRow = ConnectionRow & { secret: Buffer | null; refresh_token: Buffer | null };

/** What an import writes, the secrets already sealed. */
export interface ImportedConnection {
  id: string;
  tenantId: string;
  userId: string;
  provider: string;
  type: ConnectionType;
  scopes: string[];
  expiresAt: Date | null;
  dataKeyId: string;
  secret: Buffer;
  refreshToken: Buffer | null;
  refreshDueAt: Date | null;
}

/** A connection as the refresh path reads it, under its lease. */
export interface LeasedRow {
  id: string;
  tenant_id: string;
  user_id: string;
  provider: string;
  status: string;
  version: number;
  expires_at: Date | null;
  scopes: string[];
  secret: Buffer | null;
  refresh_token: Buffer | null;
  refresh_failures: number;
  refresh_retry_at: Date | null;
  refresh_due_at: Date | null;
  /** The previous lease had expired without being released (a crash mid-refresh). */
  interrupted: boolean;
}

/** A connection whose refresh falls due. */
export interface DueRow {
  id: string;
  tenant_id: string;
  provider: string;
  version: number;
  refresh_failures: number;
  due: Date;
}

/** What a reader waiting on another process's refresh sees. */
export interface StoredTokenRow {
  status: string;
  expires_at: Date | null;
  refresh_due_at: Date | null;
  scopes: string[];
  secret: Buffer | null;
  leased: boolean;
}

/** The new token set a refresh commits, already sealed. */
export interface RefreshedTokenSet {
  secret: Buffer;
  refreshToken: Buffer | null;
  expiresAt: Date | null;
  scopes: string[];
  dataKeyId: string;
  dueAt: Date | null;
}

@Injectable()
export class ConnectionsRepository {
  constructor(
    @Inject(DataSource) private readonly db: DataSource,
    @Inject(AuditService) private readonly audit: AuditService,
  ) {}

  /** The user's live connection to the provider, locked until the caller's transaction ends. */
  async lockLive(
    m: EntityManager,
    tenantId: string,
    userId: string,
    provider: string,
  ): Promise<string | undefined> {
    const rows: { id: string }[] = await m.query(
      `SELECT id FROM connections WHERE tenant_id = $1 AND user_id = $2 AND provider = $3 AND revoked_at IS NULL
       FOR UPDATE`,
      [tenantId, userId, provider],
    );
    return rows[0]?.id;
  }

  /** Writes an imported credential: a new row, or over the live one (`replace`), active again. */
  async writeImported(m: EntityManager, c: ImportedConnection, replace: boolean): Promise<ConnectionRow> {
    const params = [
      c.id,
      c.tenantId,
      c.userId,
      c.provider,
      c.type,
      c.scopes,
      c.expiresAt,
      c.dataKeyId,
      c.secret,
      c.refreshToken,
      c.refreshDueAt,
    ];
    const rows = returned<ConnectionRow>(
      replace
        ? await m.query(
            `UPDATE connections SET type = $5, status = 'active', scopes = $6, expires_at = $7, data_key_id = $8,
             secret = $9, refresh_token = $10, refresh_due_at = $11, refresh_failures = 0, refresh_retry_at = NULL,
             version = version + 1, updated_at = now()
           WHERE id = $1 AND tenant_id = $2 AND user_id = $3 AND provider = $4 RETURNING ${columns}`,
            params,
          )
        : await m.query(
            `INSERT INTO connections (id, tenant_id, user_id, provider, type, status, scopes, expires_at, data_key_id,
             secret, refresh_token, refresh_due_at, version)
           VALUES ($1, $2, $3, $4, $5, 'active', $6, $7, $8, $9, $10, $11, 1) RETURNING ${columns}`,
            params,
          ),
    );
    return rows[0];
  }

  /** How many live (non-revoked) connections of the tenant use the provider. */
  async countLive(m: EntityManager, tenantId: string, provider: string): Promise<number> {
    const rows: { n: number }[] = await m.query(
      `SELECT count(*)::int AS n FROM connections WHERE tenant_id = $1 AND provider = $2 AND revoked_at IS NULL`,
      [tenantId, provider],
    );
    return rows[0]?.n ?? 0;
  }

  /** A user's connections, by provider (revoked tombstones too when asked). */
  listForUser(
    m: EntityManager,
    tenantId: string,
    userId: string,
    includeRevoked: boolean,
  ): Promise<ConnectionRow[]> {
    return m.query(
      `SELECT ${columns} FROM connections WHERE tenant_id = $1 AND user_id = $2
         ${includeRevoked ? '' : 'AND revoked_at IS NULL'} ORDER BY provider, created_at`,
      [tenantId, userId],
    );
  }

  /** A live connection with its sealed secrets, locked until the caller's transaction ends. */
  async lockLiveById(
    m: EntityManager,
    tenantId: string,
    connectionId: string,
  ): Promise<SealedConnectionRow | undefined> {
    const rows: SealedConnectionRow[] = await m.query(
      `SELECT ${columns}, secret, refresh_token FROM connections
        WHERE id = $1 AND tenant_id = $2 AND revoked_at IS NULL FOR UPDATE`,
      [connectionId, tenantId],
    );
    return rows[0];
  }

  /** Destroys the secrets and leaves a tombstone (`status: revoked`). */
  async markRevoked(m: EntityManager, tenantId: string, connectionId: string): Promise<ConnectionRow> {
    const rows = returned<ConnectionRow>(
      await m.query(
        `UPDATE connections SET status = 'revoked', secret = NULL, refresh_token = NULL, revoked_at = now(),
         version = version + 1, updated_at = now()
       WHERE id = $1 AND tenant_id = $2 RETURNING ${columns}`,
        [connectionId, tenantId],
      ),
    );
    return rows[0];
  }

  /** A connection with its sealed secrets (revoked ones have none). */
  async withSecrets(
    m: EntityManager,
    tenantId: string,
    connectionId: string,
  ): Promise<SealedConnectionRow | undefined> {
    const rows: SealedConnectionRow[] = await m.query(
      `SELECT ${columns}, secret, refresh_token FROM connections WHERE id = $1 AND tenant_id = $2`,
      [connectionId, tenantId],
    );
    return rows[0];
  }

  /** Marks up to `limit` access tokens past expiry with no refresh token as expired (rows another holds are skipped). */
  async markExpired(m: EntityManager, limit: number): Promise<ConnectionRow[]> {
    return returned<ConnectionRow>(
      await m.query(
        `UPDATE connections SET status = 'expired', version = version + 1, updated_at = now()
        WHERE id IN (SELECT id FROM connections WHERE status = 'active' AND type = 'oauth2' AND revoked_at IS NULL
                       AND refresh_token IS NULL AND expires_at <= now() LIMIT $1 FOR UPDATE SKIP LOCKED)
        RETURNING ${columns}`,
        [limit],
      ),
    );
  }

  /** The provider's account id (the ID token's sub), learnt when the connect flow completes. */
  async setExternalAccount(m: EntityManager, connectionId: string, accountId: string): Promise<void> {
    await m.query('UPDATE connections SET external_account_id = $2 WHERE id = $1', [connectionId, accountId]);
  }

  /** Active OAuth connections with a refresh token whose refresh falls due within the horizon. */
  dueForRefresh(horizonSeconds: number, limit: number, unleasedOnly: boolean): Promise<DueRow[]> {
    return this.db.query(
      `SELECT id, tenant_id, provider, version, refresh_failures, GREATEST(refresh_due_at, refresh_retry_at) AS due
         FROM connections
        WHERE refresh_due_at <= now() + make_interval(secs => $1) AND status = 'active' AND type = 'oauth2'
          AND revoked_at IS NULL AND refresh_token IS NOT NULL
          AND (refresh_retry_at IS NULL OR refresh_retry_at <= now() + make_interval(secs => $1))
          AND (NOT $3 OR refresh_lease_until IS NULL OR refresh_lease_until < now())
        ORDER BY refresh_due_at LIMIT $2`,
      [horizonSeconds, limit, unleasedOnly],
    );
  }

  /** Takes the refresh lease and re-reads the row in one statement; null when someone else holds it. */
  async takeRefreshLease(
    tenantId: string,
    connectionId: string,
    leaseSeconds: number,
    owner: string,
  ): Promise<LeasedRow | null> {
    const rows = returned<LeasedRow>(
      await this.db.query(
        `UPDATE connections c SET refresh_lease_until = now() + make_interval(secs => $3), refresh_lease_owner = $4
          FROM (SELECT id, refresh_lease_until AS previous FROM connections WHERE id = $1 AND tenant_id = $2 FOR UPDATE) p
          WHERE c.id = p.id AND (p.previous IS NULL OR p.previous < now())
          RETURNING c.id, c.tenant_id, c.user_id, c.provider, c.status, c.version, c.expires_at, c.scopes, c.secret,
                    c.refresh_token, c.refresh_failures, c.refresh_retry_at, c.refresh_due_at,
                    (p.previous IS NOT NULL) AS interrupted`,
        [connectionId, tenantId, leaseSeconds, owner],
      ),
    );
    return rows[0] ?? null;
  }

  /** The stored token and whether a refresh of it is under way (a lease not yet expired). */
  async storedToken(tenantId: string, connectionId: string): Promise<StoredTokenRow | undefined> {
    const rows: StoredTokenRow[] = await this.db.query(
      `SELECT status, expires_at, refresh_due_at, scopes, secret,
              (refresh_lease_until IS NOT NULL AND refresh_lease_until >= now()) AS leased
           FROM connections WHERE id = $1 AND tenant_id = $2`,
      [connectionId, tenantId],
    );
    return rows[0];
  }

  /** Gives the lease up, if this owner still holds it. */
  releaseRefreshLease(connectionId: string, owner: string): Promise<unknown> {
    return this.db.query(
      'UPDATE connections SET refresh_lease_until = NULL, refresh_lease_owner = NULL WHERE id = $1 AND refresh_lease_owner = $2',
      [connectionId, owner],
    );
  }

  /** Counts a failed refresh and holds the next attempt back by `delaySeconds`. */
  recordRefreshFailure(connectionId: string, delaySeconds: number): Promise<unknown> {
    return this.db.query(
      `UPDATE connections SET refresh_failures = refresh_failures + 1,
         refresh_retry_at = now() + make_interval(secs => $2) WHERE id = $1`,
      [connectionId, delaySeconds],
    );
  }

  /**
   * The refresh commit: writes the new token set, if the row is still at the version read, and its audit
   * event, in one statement. False when the row was written meanwhile (nothing is stored then).
   */
  commitRefresh(
    connectionId: string,
    version: number,
    set: RefreshedTokenSet,
    event: AuditRecord,
  ): Promise<boolean> {
    return this.audit.recordWithUpdate(
      `UPDATE connections SET secret = $3, refresh_token = COALESCE($4, refresh_token), expires_at = $5,
         scopes = $6, data_key_id = $7, refresh_due_at = $8, refresh_failures = 0, refresh_retry_at = NULL,
         version = version + 1, updated_at = now(), refresh_lease_until = NULL, refresh_lease_owner = NULL
       WHERE id = $1 AND version = $2 RETURNING id`,
      [
        connectionId,
        version,
        set.secret,
        set.refreshToken,
        set.expiresAt,
        set.scopes,
        set.dataKeyId,
        set.dueAt,
      ],
      event,
    );
  }

  /** Marks the row needs_reauth if it is still at the version read (in the caller's transaction). */
  async markNeedsReauth(m: EntityManager, connectionId: string, version: number): Promise<boolean> {
    const updated = returned<{ id: string }>(
      await m.query(
        `UPDATE connections SET status = 'needs_reauth', version = version + 1, updated_at = now(),
           refresh_lease_until = NULL, refresh_lease_owner = NULL WHERE id = $1 AND version = $2 RETURNING id`,
        [connectionId, version],
      ),
    );
    return updated.length > 0;
  }
}
