/**
 * Every statement on console_sessions: a sign-in's insert, the per-request lookup (which also moves the idle
 * clock on, and reads whether the admin key that signed in is still live, as AdminKeysRepository's lookup does:
 * not revoked, its tenant not being deleted), sign-out, and clearing sessions past their limits.
 */
import { Inject, Injectable } from '@nestjs/common';
import { DataSource } from 'typeorm';
import type { AdminRole } from '../common/admin-access.js';
import { returned } from '../database/sql.js';

/** A live session as a request sees it, with the name of the admin key that signed in (null for single sign-on). */
export interface ConsoleSessionRow {
  id: string;
  admin_key_id: string | null;
  user_id: string | null;
  identity_provider: string | null;
  tenant_id: string | null;
  role: AdminRole;
  key_name: string | null;
  created_at: Date;
  expires_at: Date;
}

export interface NewConsoleSession {
  id: string;
  tokenHash: Buffer;
  /** The admin key that signed in, or the single sign-on user and their identity provider. */
  adminKeyId: string | null;
  userId: string | null;
  identityProvider: string | null;
  tenantId: string | null;
  role: AdminRole;
  absoluteSeconds: number;
}

@Injectable()
export class ConsoleSessionsRepository {
  constructor(@Inject(DataSource) private readonly db: DataSource) {}

  async insert(s: NewConsoleSession): Promise<void> {
    await this.db.query(
      `INSERT INTO console_sessions (id, token_hash, admin_key_id, user_id, identity_provider, tenant_id, role, expires_at)
       VALUES ($1, $2, $3, $4, $5, $6, $7, now() + make_interval(secs => $8))`,
      [s.id, s.tokenHash, s.adminKeyId, s.userId, s.identityProvider, s.tenantId, s.role, s.absoluteSeconds],
    );
  }

  /**
   * The session with this token hash if it is live: within both limits (the database's clock decides), its
   * tenant not being deleted, and its admin key not revoked, or (single sign-on) its user still listed with
   * its role in the tenant's consoleLogin for the same identity provider, which the tenant still trusts. Its
   * idle clock starts again. One statement.
   */
  async touchLive(tokenHash: Buffer, idleSeconds: number): Promise<ConsoleSessionRow | undefined> {
    const rows = returned<ConsoleSessionRow>(
      await this.db.query(
        `UPDATE console_sessions s SET last_seen_at = now()
          WHERE s.token_hash = $1
            AND s.expires_at > now() AND s.last_seen_at > now() - make_interval(secs => $2)
            AND NOT EXISTS (SELECT 1 FROM tenants t WHERE t.id = s.tenant_id AND t.deletion_requested_at IS NOT NULL)
            AND (EXISTS (SELECT 1 FROM admin_keys k WHERE k.id = s.admin_key_id AND k.revoked_at IS NULL)
              OR EXISTS (SELECT 1 FROM tenants t WHERE t.id = s.tenant_id AND s.user_id IS NOT NULL
                            AND t.console_login->>'identityProvider' = s.identity_provider
                            AND EXISTS (SELECT 1 FROM identity_providers i
                                         WHERE i.tenant_id = t.id AND i.name = s.identity_provider)
                            AND jsonb_exists(t.console_login -> (CASE s.role WHEN 'admin' THEN 'admins' ELSE 'auditors' END),
                                             s.user_id)))
        RETURNING s.id, s.admin_key_id, s.user_id, s.identity_provider, s.tenant_id, s.role,
                  (SELECT k.name FROM admin_keys k WHERE k.id = s.admin_key_id) AS key_name, s.created_at, s.expires_at`,
        [tokenHash, idleSeconds],
      ),
    );
    return rows[0];
  }

  /** Removes the session with this token hash (signed out, or found dead); whether there was one. */
  async deleteByHash(tokenHash: Buffer): Promise<boolean> {
    const rows = returned<{ id: string }>(
      await this.db.query('DELETE FROM console_sessions WHERE token_hash = $1 RETURNING id', [tokenHash]),
    );
    return rows.length > 0;
  }

  /** Removes sessions past either limit (run at each sign-in, so the table holds live sessions only). */
  async deleteExpired(idleSeconds: number): Promise<number> {
    const rows = returned<{ id: string }>(
      await this.db.query(
        `DELETE FROM console_sessions
          WHERE expires_at <= now() OR last_seen_at <= now() - make_interval(secs => $1) RETURNING id`,
        [idleSeconds],
      ),
    );
    return rows.length;
  }
}
