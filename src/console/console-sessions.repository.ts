/**
 * Every statement on console_sessions: a sign-in's insert, the per-request lookup (which also moves the idle
 * clock on, and reads whether the admin key that signed in is still live, as AdminKeysRepository's lookup does:
 * not revoked, its tenant not being deleted), sign-out, and clearing sessions past their limits.
 */
import { Inject, Injectable } from '@nestjs/common';
import { DataSource } from 'typeorm';
import type { AdminRole } from '../common/admin-access.js';
import { returned } from '../database/sql.js';

/** A live session as a request sees it, with the name of the admin key that signed in. */
export interface ConsoleSessionRow {
  id: string;
  admin_key_id: string;
  tenant_id: string | null;
  role: AdminRole;
  key_name: string;
  created_at: Date;
  expires_at: Date;
}

export interface NewConsoleSession {
  id: string;
  tokenHash: Buffer;
  adminKeyId: string;
  tenantId: string | null;
  role: AdminRole;
  absoluteSeconds: number;
}

@Injectable()
export class ConsoleSessionsRepository {
  constructor(@Inject(DataSource) private readonly db: DataSource) {}

  async insert(s: NewConsoleSession): Promise<void> {
    await this.db.query(
      `INSERT INTO console_sessions (id, token_hash, admin_key_id, tenant_id, role, expires_at)
       VALUES ($1, $2, $3, $4, $5, now() + make_interval(secs => $6))`,
      [s.id, s.tokenHash, s.adminKeyId, s.tenantId, s.role, s.absoluteSeconds],
    );
  }

  /**
   * The session with this token hash if it is live: within both limits (the database's clock decides), its
   * admin key not revoked and its tenant not being deleted. Its idle clock starts again. One statement.
   */
  async touchLive(tokenHash: Buffer, idleSeconds: number): Promise<ConsoleSessionRow | undefined> {
    const rows = returned<ConsoleSessionRow>(
      await this.db.query(
        `UPDATE console_sessions s SET last_seen_at = now()
           FROM admin_keys k
          WHERE s.token_hash = $1 AND k.id = s.admin_key_id AND k.revoked_at IS NULL
            AND s.expires_at > now() AND s.last_seen_at > now() - make_interval(secs => $2)
            AND NOT EXISTS (SELECT 1 FROM tenants t WHERE t.id = s.tenant_id AND t.deletion_requested_at IS NOT NULL)
        RETURNING s.id, s.admin_key_id, s.tenant_id, s.role, k.name AS key_name, s.created_at, s.expires_at`,
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
