/**
 * Every statement on tenant_key_backends (a tenant's BYOK configurations, one immutable row each),
 * tenant_key_migrations (the state of moving a tenant's data keys to its current configuration; no entity, the
 * table comes from a migration), and the tenants table's key-backend pointer: key_backend_type and
 * key_backend_id. Those two columns of `tenants` are crypto's and are written only here (tenants/ sits above
 * crypto/, so crypto cannot call a tenants repository); a new tenant row starts on 'managed' and the tenants
 * domain shows the type, but never changes it. The rest of the row is the tenants domain's.
 */
import { Inject, Injectable } from '@nestjs/common';
import { DataSource, type EntityManager } from 'typeorm';
import { returned } from '../database/sql.js';
import type { ExternalType, KeyBackendSettings, KeyBackendType } from './key-backend.js';

/** A saved configuration, its credentials still sealed. */
export interface KeyBackendConfigRow {
  id: string;
  tenant_id: string;
  type: ExternalType;
  settings: KeyBackendSettings;
  secret_wrapped_key: Buffer | null;
  secret: Buffer | null;
  retired_at: Date | null;
}

/** A new configuration: its settings in the clear, its credentials sealed (none: both null). */
export interface NewKeyBackendConfig {
  id: string;
  tenantId: string;
  type: ExternalType;
  settings: KeyBackendSettings;
  secretWrappedKey: Buffer | null;
  secret: Buffer | null;
}

/** The tenant's key-backend pointer. */
export interface TenantKeyBackendPointer {
  key_backend_id: string | null;
  key_backend_type: KeyBackendType;
}

/** Which backend failed a migration attempt: the one keys leave, or the one they go to. */
export type MigrationSide = 'source' | 'target';

/** A tenant's migration state (all null when it has no row). */
export interface MigrationRow {
  started_at: Date | null;
  attempts: number | null;
  failing_since: Date | null;
  last_attempt_at: Date | null;
  next_attempt_at: Date | null;
  last_error_code: string | null;
  last_error_reason: string | null;
  last_error_side: MigrationSide | null;
  last_error_message: string | null;
}

/** The error a failed migration attempt records. */
export interface MigrationError {
  code: string;
  reason: string;
  side: MigrationSide;
  message: string;
}

/** What the key-backend view reads: the pointer, its configuration, the data-key counts and the migration. */
export type KeyBackendViewRow = MigrationRow & {
  key_backend_type: KeyBackendType;
  settings: KeyBackendSettings | null;
  created_at: Date | null;
  total: number;
  current: number;
};

@Injectable()
export class KeyBackendsRepository {
  constructor(@Inject(DataSource) private readonly db: DataSource) {}

  /** The configuration new data keys of this tenant are wrapped by (null: managed, or no such tenant). */
  async currentBackendId(tenantId: string): Promise<string | null> {
    const rows: { key_backend_id: string | null }[] = await this.db.query(
      'SELECT key_backend_id FROM tenants WHERE id = $1',
      [tenantId],
    );
    return rows[0]?.key_backend_id ?? null;
  }

  /** The tenant's backend type, its row locked until the caller's transaction ends; undefined: no tenant. */
  async lockBackendType(m: EntityManager, tenantId: string): Promise<KeyBackendType | undefined> {
    const rows: { key_backend_type: KeyBackendType }[] = await m.query(
      'SELECT key_backend_type FROM tenants WHERE id = $1 FOR UPDATE',
      [tenantId],
    );
    return rows[0]?.key_backend_type;
  }

  /** The tenant's pointer, its row locked until the caller's transaction ends; undefined: no tenant. */
  async lockPointer(m: EntityManager, tenantId: string): Promise<TenantKeyBackendPointer | undefined> {
    const rows: TenantKeyBackendPointer[] = await m.query(
      'SELECT key_backend_id, key_backend_type FROM tenants WHERE id = $1 FOR UPDATE',
      [tenantId],
    );
    return rows[0];
  }

  /** Points the tenant at a configuration (null: managed). */
  async setPointer(
    m: EntityManager,
    tenantId: string,
    type: KeyBackendType,
    backendId: string | null,
  ): Promise<void> {
    await m.query('UPDATE tenants SET key_backend_type = $2, key_backend_id = $3 WHERE id = $1', [
      tenantId,
      type,
      backendId,
    ]);
  }

  /**
   * The tenant's backend as the admin API shows it: the pointer, its configuration, how many data keys the
   * tenant has and how many are on it (subqueries on data_keys), and the migration state.
   */
  async view(tenantId: string): Promise<KeyBackendViewRow | undefined> {
    const rows: KeyBackendViewRow[] = await this.db.query(
      `SELECT t.key_backend_type, b.settings, b.created_at,
              (SELECT count(*)::int FROM data_keys d WHERE d.tenant_id = t.id) AS total,
              (SELECT count(*)::int FROM data_keys d WHERE d.tenant_id = t.id
                  AND d.backend_id IS NOT DISTINCT FROM t.key_backend_id) AS current,
              m.started_at, m.attempts, m.failing_since, m.last_attempt_at, m.next_attempt_at,
              m.last_error_code, m.last_error_reason, m.last_error_side, m.last_error_message
         FROM tenants t LEFT JOIN tenant_key_backends b ON b.id = t.key_backend_id
              LEFT JOIN tenant_key_migrations m ON m.tenant_id = t.id
        WHERE t.id = $1`,
      [tenantId],
    );
    return rows[0];
  }

  /** One configuration of this tenant, with its sealed credentials. */
  async configuration(tenantId: string, backendId: string): Promise<KeyBackendConfigRow | undefined> {
    const rows: KeyBackendConfigRow[] = await this.db.query(
      `SELECT id, tenant_id, type, settings, secret_wrapped_key, secret, retired_at
         FROM tenant_key_backends WHERE id = $1 AND tenant_id = $2`,
      [backendId, tenantId],
    );
    return rows[0];
  }

  /** A configuration's type and whether it is retired. */
  async configurationState(
    tenantId: string,
    backendId: string,
  ): Promise<{ type: KeyBackendType; retired_at: Date | null } | undefined> {
    const rows: { type: KeyBackendType; retired_at: Date | null }[] = await this.db.query(
      'SELECT type, retired_at FROM tenant_key_backends WHERE id = $1 AND tenant_id = $2',
      [backendId, tenantId],
    );
    return rows[0];
  }

  /** Saves a new configuration (rows are never changed afterwards, only retired). */
  async insertConfiguration(m: EntityManager, c: NewKeyBackendConfig): Promise<void> {
    await m.query(
      `INSERT INTO tenant_key_backends (id, tenant_id, type, settings, secret_wrapped_key, secret)
           VALUES ($1, $2, $3, $4, $5, $6)`,
      [c.id, c.tenantId, c.type, JSON.stringify(c.settings), c.secretWrappedKey, c.secret],
    );
  }

  /**
   * Retires the tenant's configurations that it does not point at and no data key uses any more, erasing
   * their credentials; their ids.
   */
  async retireUnused(tenantId: string): Promise<string[]> {
    const retired = returned<{ id: string }>(
      await this.db.query(
        `UPDATE tenant_key_backends b SET retired_at = now(), secret = NULL, secret_wrapped_key = NULL
          WHERE b.tenant_id = $1 AND b.retired_at IS NULL
            AND b.id IS DISTINCT FROM (SELECT key_backend_id FROM tenants WHERE id = $1)
            AND NOT EXISTS (SELECT 1 FROM data_keys d WHERE d.backend_id = b.id)
          RETURNING b.id`,
        [tenantId],
      ),
    );
    return retired.map((r) => r.id);
  }

  /** Tenants whose migration is failing (for the gauge). */
  async countFailingMigrations(): Promise<number> {
    const rows: { n: number }[] = await this.db.query(
      'SELECT count(*)::int AS n FROM tenant_key_migrations WHERE failing_since IS NOT NULL',
    );
    return rows[0]?.n ?? 0;
  }

  /** A fresh migration state toward `target` (a new configuration, or back after a cancel). */
  async resetMigration(m: EntityManager, tenantId: string, target: string | null): Promise<void> {
    await m.query(
      `INSERT INTO tenant_key_migrations AS k (tenant_id, target_backend_id) VALUES ($1, $2)
       ON CONFLICT (tenant_id) DO UPDATE SET target_backend_id = $2, started_at = now(), attempts = 0,
         failing_since = NULL, last_attempt_at = NULL, next_attempt_at = NULL, last_error_code = NULL,
         last_error_reason = NULL, last_error_side = NULL, last_error_message = NULL`,
      [tenantId, target],
    );
  }

  /** A new failure episode toward the tenant's current configuration: no attempts, no backoff. */
  async restartMigration(m: EntityManager, tenantId: string): Promise<void> {
    await m.query(
      `INSERT INTO tenant_key_migrations (tenant_id, target_backend_id)
         VALUES ($1, (SELECT key_backend_id FROM tenants WHERE id = $1))
         ON CONFLICT (tenant_id) DO UPDATE SET attempts = 0, failing_since = NULL, next_attempt_at = NULL`,
      [tenantId],
    );
  }

  /**
   * Records a failed attempt and when to try again (backoff from `retryBaseSeconds`, doubling, at most
   * `retryMaxSeconds`); `new_episode` when it is the first failure since the migration last moved on.
   */
  async recordFailure(
    m: EntityManager,
    tenantId: string,
    error: MigrationError,
    retryBaseSeconds: number,
    retryMaxSeconds: number,
  ): Promise<{ attempts: number; new_episode: boolean } | undefined> {
    const rows: { attempts: number; new_episode: boolean }[] = await m.query(
      `INSERT INTO tenant_key_migrations AS k
           (tenant_id, target_backend_id, attempts, failing_since, last_attempt_at, next_attempt_at,
            last_error_code, last_error_reason, last_error_side, last_error_message)
         VALUES ($1, (SELECT key_backend_id FROM tenants WHERE id = $1), 1, now(), now(),
                 now() + make_interval(secs => $6), $2, $3, $4, $5)
         ON CONFLICT (tenant_id) DO UPDATE SET
           attempts = k.attempts + 1,
           failing_since = COALESCE(k.failing_since, now()),
           last_attempt_at = now(),
           next_attempt_at = now() + make_interval(secs => LEAST($7::float8, $6 * power(2, LEAST(k.attempts, 16)))),
           last_error_code = $2, last_error_reason = $3, last_error_side = $4, last_error_message = $5
         RETURNING k.attempts, k.failing_since = now() AS new_episode`,
      [tenantId, error.code, error.reason, error.side, error.message, retryBaseSeconds, retryMaxSeconds],
    );
    return rows[0];
  }

  /** A run moved keys: whatever failed before has passed. */
  async recordProgress(tenantId: string): Promise<void> {
    await this.db.query(
      `UPDATE tenant_key_migrations SET attempts = 0, failing_since = NULL, next_attempt_at = NULL,
              last_attempt_at = now(), last_error_code = NULL, last_error_reason = NULL, last_error_side = NULL,
              last_error_message = NULL
        WHERE tenant_id = $1`,
      [tenantId],
    );
  }

  /** The migration is done: its state goes. */
  async deleteMigration(tenantId: string): Promise<void> {
    await this.db.query('DELETE FROM tenant_key_migrations WHERE tenant_id = $1', [tenantId]);
  }
}
