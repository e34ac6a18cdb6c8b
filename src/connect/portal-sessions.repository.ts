/**
 * Every statement on portal_sessions: creating a link, opening it once, the browser session's reads (each one
 * also its idle check and its activity mark, in one statement), the sign-in at the tenant's identity provider,
 * signing out, and pruning. The pages' reads join the tenant for its branding and whether sign-in is required.
 */
import { Inject, Injectable } from '@nestjs/common';
import { DataSource, type EntityManager } from 'typeorm';
import type { Actor } from '../audit/audit.service.js';
import { returned } from '../database/sql.js';
import type { TenantBrandColumns } from './connect-sessions.repository.js';

/** A portal session as its pages read it, with its tenant's branding and sign-in requirement (a join). */
export interface PortalSessionRow extends TenantBrandColumns {
  id: string;
  user_id: string;
  return_to: string | null;
  link_expires_at: Date;
  opened_at: Date | null;
  expires_at: Date;
  signed_in_at: Date | null;
  /** The tenant requires sign-in at its identity provider (connectLogin). */
  login_required: boolean;
}

/** A session as the sign-in's callback reads it: with the browser it is bound to and the sealed secrets. */
export interface PortalLoginRow extends PortalSessionRow {
  browser_hash: Buffer | null;
  login_secrets: Buffer | null;
}

const pageColumns = `s.id, s.tenant_id, t.name AS tenant_name, t.display_name AS tenant_display_name,
  t.brand_color AS tenant_brand_color, encode(t.logo_sha256, 'hex') AS tenant_logo_sha256,
  t.logo_width AS tenant_logo_width, t.logo_height AS tenant_logo_height, s.user_id, s.return_to,
  s.link_expires_at, s.opened_at, s.expires_at, s.signed_in_at, (t.connect_login IS NOT NULL) AS login_required`;

export interface NewPortalSession {
  id: string;
  tenantId: string;
  userId: string;
  tokenHash: Buffer;
  returnTo: string | null;
  createdBy: Actor;
  linkTtlSeconds: number;
}

@Injectable()
export class PortalSessionsRepository {
  constructor(@Inject(DataSource) private readonly db: DataSource) {}

  /**
   * Writes a new link for a tenant that exists and is not being deleted; returns its id and expiry, or
   * undefined when there is no such tenant.
   */
  async insert(m: EntityManager, s: NewPortalSession): Promise<{ link_expires_at: Date } | undefined> {
    const rows = returned<{ link_expires_at: Date }>(
      await m.query(
        `INSERT INTO portal_sessions (id, tenant_id, user_id, token_hash, return_to, created_by_type, created_by_id,
             link_expires_at, expires_at)
           SELECT $1, t.id, $3, $4, $5, $6, $7, now() + make_interval(secs => $8), now() + make_interval(secs => $8)
             FROM tenants t WHERE t.id = $2 AND t.deletion_requested_at IS NULL
           RETURNING link_expires_at`,
        [
          s.id,
          s.tenantId,
          s.userId,
          s.tokenHash,
          s.returnTo,
          s.createdBy.type,
          s.createdBy.id,
          s.linkTtlSeconds,
        ],
      ),
    );
    return rows[0];
  }

  /** The session behind a link's token (opened or not, expired or not); none once its tenant is being deleted. */
  async findByTokenHash(tokenHash: Buffer): Promise<PortalSessionRow | undefined> {
    const rows: PortalSessionRow[] = await this.db.query(
      `SELECT ${pageColumns} FROM portal_sessions s JOIN tenants t ON t.id = s.tenant_id
        WHERE s.token_hash = $1 AND t.deletion_requested_at IS NULL`,
      [tokenHash],
    );
    return rows[0];
  }

  /**
   * Opens a link, once and before it expires: binds the browser (its cookie's hash) and starts the browser
   * session, which ends `sessionSeconds` from now at the latest. False when the link was opened already or
   * has expired meanwhile.
   */
  async open(m: EntityManager, id: string, browserHash: Buffer, sessionSeconds: number): Promise<boolean> {
    const rows = returned<{ id: string }>(
      await m.query(
        `UPDATE portal_sessions
            SET opened_at = now(), browser_hash = $2, last_seen_at = now(),
                expires_at = now() + make_interval(secs => $3)
          WHERE id = $1 AND opened_at IS NULL AND link_expires_at > now()
          RETURNING id`,
        [id, browserHash, sessionSeconds],
      ),
    );
    return rows.length > 0;
  }

  /**
   * The live browser session whose cookie hashes to `browserHash`, marked as active now: none when there is
   * no such session, it has been idle for `idleSeconds` or more, it has reached its end, or its tenant is
   * being deleted. Reading and marking are one statement, so an idle session cannot be revived by a race.
   */
  async touch(browserHash: Buffer, idleSeconds: number): Promise<PortalSessionRow | undefined> {
    const rows = returned<PortalSessionRow>(
      await this.db.query(
        `UPDATE portal_sessions s SET last_seen_at = now()
           FROM tenants t
          WHERE s.browser_hash = $1 AND t.id = s.tenant_id AND t.deletion_requested_at IS NULL
            AND s.expires_at > now() AND s.last_seen_at > now() - make_interval(secs => $2)
          RETURNING ${pageColumns}`,
        [browserHash, idleSeconds],
      ),
    );
    return rows[0];
  }

  /** Binds a sign-in to a session: its state (hash) and sealed secrets. */
  async startLogin(id: string, stateHash: Buffer, loginSecrets: Buffer): Promise<void> {
    await this.db.query(
      'UPDATE portal_sessions SET login_state_hash = $2, login_secrets = $3 WHERE id = $1',
      [id, stateHash, loginSecrets],
    );
  }

  /** The session a sign-in response's state belongs to (its tenant not being deleted). */
  async findByLoginStateHash(stateHash: Buffer): Promise<PortalLoginRow | undefined> {
    const rows: PortalLoginRow[] = await this.db.query(
      `SELECT ${pageColumns}, s.browser_hash, s.login_secrets
         FROM portal_sessions s JOIN tenants t ON t.id = s.tenant_id
        WHERE s.login_state_hash = $1 AND t.deletion_requested_at IS NULL`,
      [stateHash],
    );
    return rows[0];
  }

  /** Clears the sign-in's state, so that only one caller owns the response; false when someone else did. */
  async takeLoginState(id: string, stateHash: Buffer): Promise<boolean> {
    const rows = returned<{ id: string }>(
      await this.db.query(
        `UPDATE portal_sessions SET login_state_hash = NULL, login_secrets = NULL
          WHERE id = $1 AND login_state_hash = $2 RETURNING id`,
        [id, stateHash],
      ),
    );
    return rows.length > 0;
  }

  /**
   * Records the sign-in as the session's user and moves the session to a new cookie (the one the browser had
   * before signing in stops working), while the session is live.
   */
  async signedIn(m: EntityManager, id: string, browserHash: Buffer): Promise<boolean> {
    const rows = returned<{ id: string }>(
      await m.query(
        `UPDATE portal_sessions SET signed_in_at = now(), browser_hash = $2, last_seen_at = now()
          WHERE id = $1 AND browser_hash IS NOT NULL AND expires_at > now() RETURNING id`,
        [id, browserHash],
      ),
    );
    return rows.length > 0;
  }

  /** Ends a browser session at once (signing out): its cookie stops working. */
  async end(id: string): Promise<void> {
    await this.db.query(
      `UPDATE portal_sessions SET browser_hash = NULL, login_state_hash = NULL, login_secrets = NULL,
           expires_at = least(expires_at, now())
        WHERE id = $1`,
      [id],
    );
  }

  /**
   * Deletes up to `limit` sessions that ended more than `retentionSeconds` ago, skipping rows another
   * deletion holds (callers run it side by side); returns how many.
   */
  async deleteEnded(retentionSeconds: number, limit: number): Promise<number> {
    const res: unknown = await this.db.query(
      `DELETE FROM portal_sessions WHERE id IN (
           SELECT id FROM portal_sessions WHERE expires_at < now() - make_interval(secs => $1)
            LIMIT $2 FOR UPDATE SKIP LOCKED)`,
      [retentionSeconds, limit],
    );
    return (res as [unknown, number])[1];
  }
}
