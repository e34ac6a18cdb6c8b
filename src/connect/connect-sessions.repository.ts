/**
 * Every statement on connect_sessions: the admin API's create, read and pruning (connect-sessions.service.ts),
 * the hosted flow's reads and single-use writes (connect-flow.service.ts), the sign-in before it
 * (connect-login.service.ts), and closing the pending sessions of a deleted custom provider. The flow reads a
 * session joined with its tenant (its branding, whether sign-in is required): those statements read tenants
 * too, and stay here as one round trip each.
 */
import { Inject, Injectable } from '@nestjs/common';
import { DataSource, type EntityManager } from 'typeorm';
import type { Actor } from '../audit/audit.service.js';
import { returned } from '../database/sql.js';
import type { ConnectAttemptOutcome, ConnectSessionStatus } from './connect-session.entity.js';

/** A session as the admin API shows it. */
export interface ConnectSessionRow {
  id: string;
  user_id: string;
  provider: string;
  scopes: string[];
  status: ConnectSessionStatus;
  created_at: Date;
  expires_at: Date;
  last_outcome: ConnectAttemptOutcome | null;
  last_error: string | null;
}

/** The columns of a ConnectSessionRow. */
const columns = 'id, user_id, provider, scopes, status, created_at, expires_at, last_outcome, last_error';

/** The hosted pages' branding of the session's tenant, read with the session (never the logo's bytes). */
export interface TenantBrandColumns {
  tenant_id: string;
  tenant_name: string;
  tenant_display_name: string | null;
  tenant_brand_color: string | null;
  /** The logo's SHA-256 in hex; null without a logo. */
  tenant_logo_sha256: string | null;
  tenant_logo_width: number | null;
  tenant_logo_height: number | null;
}

/** The columns of TenantBrandColumns, over `tenants t`. */
const brandColumns = `t.name AS tenant_name, t.display_name AS tenant_display_name,
                  t.brand_color AS tenant_brand_color, encode(t.logo_sha256, 'hex') AS tenant_logo_sha256,
                  t.logo_width AS tenant_logo_width, t.logo_height AS tenant_logo_height`;

/** What creating a session writes (the token only as its hash). */
export interface NewConnectSession {
  id: string;
  tenantId: string;
  tokenHash: Buffer;
  userId: string;
  provider: string;
  scopes: string[];
  returnTo: string | null;
  createdBy: Actor;
  ttlSeconds: number;
}

/** A session as the hosted flow reads it, with its tenant's branding and sign-in requirement (a join). */
export interface FlowSessionRow extends TenantBrandColumns {
  id: string;
  user_id: string;
  provider: string;
  scopes: string[];
  return_to: string | null;
  status: ConnectSessionStatus;
  expires_at: Date;
  opened_at: Date | null;
  browser_hash: Buffer | null;
  flow_secrets: Buffer | null;
  /** The tenant requires sign-in at its identity provider first (connectLogin). */
  login_required: boolean;
  verified_browser_hash: Buffer | null;
  last_outcome: ConnectAttemptOutcome | null;
}

/** The columns of a FlowSessionRow, over `connect_sessions s JOIN tenants t`. */
const flowColumns = `s.id, s.tenant_id, ${brandColumns}, s.user_id, s.provider, s.scopes, s.return_to, s.status,
                  s.expires_at, s.opened_at, s.browser_hash, s.flow_secrets,
                  (t.connect_login IS NOT NULL) AS login_required, s.verified_browser_hash, s.last_outcome`;

/** A session as the sign-in's callback reads it, with its tenant's branding (a join). */
export interface LoginSessionRow extends TenantBrandColumns {
  id: string;
  user_id: string;
  provider: string;
  status: ConnectSessionStatus;
  expires_at: Date;
  login_secrets: Buffer | null;
  return_to: string | null;
}

@Injectable()
export class ConnectSessionsRepository {
  constructor(@Inject(DataSource) private readonly db: DataSource) {}

  /** Writes a new pending session, expiring `ttlSeconds` from now. */
  async insert(m: EntityManager, s: NewConnectSession): Promise<ConnectSessionRow> {
    const rows: ConnectSessionRow[] = await m.query(
      `INSERT INTO connect_sessions (id, tenant_id, token_hash, user_id, provider, scopes, return_to, status,
           created_by_type, created_by_id, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $10, 'pending', $7, $8, now() + make_interval(secs => $9))
         RETURNING ${columns}`,
      [
        s.id,
        s.tenantId,
        s.tokenHash,
        s.userId,
        s.provider,
        s.scopes,
        s.createdBy.type,
        s.createdBy.id,
        s.ttlSeconds,
        s.returnTo,
      ],
    );
    return rows[0];
  }

  /** A session of the tenant; with `createdBy`, only if that actor created it. */
  async find(tenantId: string, id: string, createdBy?: Actor): Promise<ConnectSessionRow | undefined> {
    const rows: ConnectSessionRow[] = await this.db.query(
      `SELECT ${columns} FROM connect_sessions
        WHERE id = $1 AND tenant_id = $2
          AND ($3::text IS NULL OR (created_by_type = $3 AND created_by_id = $4))`,
      [id, tenantId, createdBy?.type ?? null, createdBy?.id ?? null],
    );
    return rows[0];
  }

  /** Deletes up to `limit` sessions that expired more than `retentionSeconds` ago; returns how many. */
  async deleteExpired(retentionSeconds: number, limit: number): Promise<number> {
    const res: unknown = await this.db.query(
      `DELETE FROM connect_sessions WHERE id IN (
           SELECT id FROM connect_sessions WHERE expires_at < now() - make_interval(secs => $1) LIMIT $2)`,
      [retentionSeconds, limit],
    );
    return (res as [unknown, number])[1];
  }

  /** The session behind a link's token (any status), with its tenant; none once the tenant is being deleted. */
  async findByTokenHash(tokenHash: Buffer): Promise<FlowSessionRow | undefined> {
    const rows: FlowSessionRow[] = await this.db.query(
      `SELECT ${flowColumns}
         FROM connect_sessions s JOIN tenants t ON t.id = s.tenant_id
        WHERE s.token_hash = $1 AND t.deletion_requested_at IS NULL`,
      [tokenHash],
    );
    return rows[0];
  }

  /** The session an authorization response's state belongs to (any status), with its tenant (not being deleted). */
  async findByStateHash(stateHash: Buffer, provider: string): Promise<FlowSessionRow | undefined> {
    const rows: FlowSessionRow[] = await this.db.query(
      `SELECT ${flowColumns}
         FROM connect_sessions s JOIN tenants t ON t.id = s.tenant_id
        WHERE s.state_hash = $1 AND s.provider = $2 AND t.deletion_requested_at IS NULL`,
      [stateHash, provider],
    );
    return rows[0];
  }

  /** Records the link's first opening; false when it had been opened already. */
  async markOpened(m: EntityManager, id: string): Promise<boolean> {
    const first = returned<{ id: string }>(
      await m.query(
        'UPDATE connect_sessions SET opened_at = now() WHERE id = $1 AND opened_at IS NULL RETURNING id',
        [id],
      ),
    );
    return first.length > 0;
  }

  /** Binds an authorization request to a pending session: its state, browser and sealed secrets (hashes). */
  async startFlow(
    m: EntityManager,
    id: string,
    stateHash: Buffer,
    browserHash: Buffer,
    flowSecrets: Buffer,
  ): Promise<void> {
    await m.query(
      `UPDATE connect_sessions SET state_hash = $2, browser_hash = $3, flow_secrets = $4
          WHERE id = $1 AND status = 'pending'`,
      [id, stateHash, browserHash, flowSecrets],
    );
  }

  /**
   * Clears a pending session's state, so that only one caller owns the authorization response. Returns the
   * flow secrets it had as read (`flowSecrets`), or null when someone else cleared the state first.
   */
  async takeState(id: string, stateHash: Buffer, flowSecrets: Buffer | null): Promise<Buffer | null> {
    const taken = returned<{ flow_secrets: Buffer | null }>(
      await this.db.query(
        `UPDATE connect_sessions SET state_hash = NULL, flow_secrets = NULL
          WHERE id = $1 AND state_hash = $2 AND status = 'pending' RETURNING $3::bytea AS flow_secrets`,
        [id, stateHash, flowSecrets],
      ),
    );
    return taken[0]?.flow_secrets ?? null;
  }

  /** The flow's end: the session is completed with its connection, and its single-use values dropped. */
  async markCompleted(m: EntityManager, id: string, connectionId: string): Promise<void> {
    await m.query(
      `UPDATE connect_sessions SET status = 'completed', completed_at = now(), connection_id = $2,
           state_hash = NULL, browser_hash = NULL, flow_secrets = NULL, last_error = NULL, last_outcome = NULL
         WHERE id = $1`,
      [id, connectionId],
    );
  }

  /**
   * Closes the tenant's pending sessions for a deleted custom provider (their links stop working, their
   * sealed flow secrets go); returns how many.
   */
  async failPendingForProvider(m: EntityManager, tenantId: string, provider: string): Promise<number> {
    const rows = returned<{ id: string }>(
      await m.query(
        `UPDATE connect_sessions
            SET status = 'failed', last_error = 'provider_deleted', last_outcome = NULL, flow_secrets = NULL,
                login_secrets = NULL, state_hash = NULL, login_state_hash = NULL
          WHERE tenant_id = $1 AND provider = $2 AND status = 'pending'
          RETURNING id`,
        [tenantId, provider],
      ),
    );
    return rows.length;
  }

  /**
   * Records how the last attempt of a pending session ended when it did not connect, and why (a stable code);
   * the session stays usable until it expires.
   */
  async recordOutcome(
    m: EntityManager,
    id: string,
    outcome: ConnectAttemptOutcome,
    reason: string,
  ): Promise<void> {
    await m.query(
      `UPDATE connect_sessions SET last_outcome = $2, last_error = $3 WHERE id = $1 AND status = 'pending'`,
      [id, outcome, reason],
    );
  }

  /** Binds a sign-in to a pending session: its state (hash) and sealed secrets. */
  async startLogin(id: string, stateHash: Buffer, loginSecrets: Buffer): Promise<void> {
    await this.db.query(
      `UPDATE connect_sessions SET login_state_hash = $2, login_secrets = $3 WHERE id = $1 AND status = 'pending'`,
      [id, stateHash, loginSecrets],
    );
  }

  /** The session a sign-in response's state belongs to (any status). */
  async findByLoginStateHash(stateHash: Buffer): Promise<LoginSessionRow | undefined> {
    const rows: LoginSessionRow[] = await this.db.query(
      `SELECT s.id, s.tenant_id, ${brandColumns}, s.user_id, s.provider, s.status, s.expires_at, s.login_secrets,
              s.return_to
         FROM connect_sessions s JOIN tenants t ON t.id = s.tenant_id
        WHERE s.login_state_hash = $1`,
      [stateHash],
    );
    return rows[0];
  }

  /** Clears the sign-in's state, so that only one caller owns the response; false when someone else did. */
  async takeLoginState(id: string, stateHash: Buffer): Promise<boolean> {
    const taken = returned<{ id: string }>(
      await this.db.query(
        `UPDATE connect_sessions SET login_state_hash = NULL, login_secrets = NULL
          WHERE id = $1 AND login_state_hash = $2 RETURNING id`,
        [id, stateHash],
      ),
    );
    return taken.length > 0;
  }

  /** Marks the browser (by the hash of its cookie) as the session's user's. */
  async setVerifiedBrowser(m: EntityManager, id: string, browserHash: Buffer): Promise<void> {
    await m.query('UPDATE connect_sessions SET verified_browser_hash = $2 WHERE id = $1', [id, browserHash]);
  }
}
