/**
 * Every statement on data_keys: opening a key by id (the hot path, one round trip, kept raw), the current
 * epoch and a new one, and what the key-backend migration and rotation read and rewrite. Statements that join
 * tenants read only its key_backend_id pointer (the backend a tenant's keys should be on; crypto's column,
 * written by KeyBackendsRepository) and whether the tenant still takes new secrets (deletion_requested_at,
 * written by tenants/): a tenant being deleted, or gone, gets nothing sealed under its keys. A deleted
 * tenant's data keys go with its row (ON DELETE CASCADE; tenants/tenants.repository.ts).
 */
import { Inject, Injectable } from '@nestjs/common';
import { DataSource, type EntityManager } from 'typeorm';
import { returned } from '../database/sql.js';
import type { KeyBackendType } from './key-backend.js';

/** A data key as the service opens it. */
export interface DataKeyRow {
  id: string;
  tenant_id: string;
  epoch: number;
  backend_id: string | null;
  wrapped: Buffer;
  created_at: Date;
}

/** The columns of a DataKeyRow. */
const rowColumns = 'id, tenant_id, epoch, backend_id, wrapped, created_at';

/** A data key as migration and rotation move it. */
export type WrappedKeyRow = Omit<DataKeyRow, 'created_at'>;

/** A data key to migrate, with the configuration it goes to (the tenant's current one; null: managed). */
export type MigratingKeyRow = WrappedKeyRow & { target: string | null };

/** A new epoch's key, wrapped by the tenant's current backend. */
export interface NewDataKey {
  id: string;
  tenantId: string;
  epoch: number;
  backendType: KeyBackendType;
  backendId: string | null;
  keyRef: string;
  wrapped: Buffer;
}

/** A data key's new wrap. */
export interface Rewrapped {
  wrapped: Buffer;
  keyRef: string;
}

@Injectable()
export class DataKeysRepository {
  constructor(@Inject(DataSource) private readonly db: DataSource) {}

  /** The tenant's data key with this id (the hot path when a key is not cached). */
  async byId(tenantId: string, dataKeyId: string): Promise<DataKeyRow | undefined> {
    const rows: DataKeyRow[] = await this.db.query(
      `SELECT ${rowColumns} FROM data_keys WHERE id = $1 AND tenant_id = $2`,
      [dataKeyId, tenantId],
    );
    return rows[0];
  }

  /** The tenant's newest epoch not retired. */
  async latest(tenantId: string): Promise<DataKeyRow | undefined> {
    const rows: DataKeyRow[] = await this.db.query(
      `SELECT ${rowColumns} FROM data_keys
        WHERE tenant_id = $1 AND retired_at IS NULL ORDER BY epoch DESC LIMIT 1`,
      [tenantId],
    );
    return rows[0];
  }

  /**
   * Whether the tenant takes new secrets (it exists and its deletion was not requested), with its newest epoch
   * not retired (undefined when it has none): what sealing reads when it does not remember the current epoch.
   */
  async sealingState(tenantId: string): Promise<{ accepting: boolean; latest: DataKeyRow | undefined }> {
    const rows: (Partial<DataKeyRow> & { accepting: boolean })[] = await this.db.query(
      `SELECT t.deletion_requested_at IS NULL AS accepting, d.id, d.tenant_id, d.epoch, d.backend_id, d.wrapped,
              d.created_at
         FROM tenants t
         LEFT JOIN LATERAL (SELECT ${rowColumns} FROM data_keys
                             WHERE tenant_id = t.id AND retired_at IS NULL ORDER BY epoch DESC LIMIT 1) d ON true
        WHERE t.id = $1`,
      [tenantId],
    );
    const row = rows[0];
    if (!row) return { accepting: false, latest: undefined };
    const { accepting, ...key } = row;
    return { accepting, latest: key.id ? (key as DataKeyRow) : undefined };
  }

  /** How many data keys the tenant has (all epochs, all backends), in the caller's transaction. */
  async countForTenant(m: EntityManager, tenantId: string): Promise<number> {
    const rows: { n: number }[] = await m.query(
      'SELECT count(*)::int AS n FROM data_keys WHERE tenant_id = $1',
      [tenantId],
    );
    return rows[0].n;
  }

  /** Inserts a new epoch's key; undefined when another replica created this epoch first. */
  async insertEpoch(m: EntityManager, k: NewDataKey): Promise<DataKeyRow | undefined> {
    const rows: DataKeyRow[] = await m.query(
      `INSERT INTO data_keys (id, tenant_id, epoch, backend_type, backend_id, key_ref, wrapped)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (tenant_id, epoch) DO NOTHING RETURNING ${rowColumns}`,
      [k.id, k.tenantId, k.epoch, k.backendType, k.backendId, k.keyRef, k.wrapped],
    );
    return rows[0];
  }

  /** Retires the tenant's epochs before `epoch` (they still open what they sealed). */
  async retireBefore(m: EntityManager, tenantId: string, epoch: number): Promise<void> {
    await m.query(
      'UPDATE data_keys SET retired_at = now() WHERE tenant_id = $1 AND epoch < $2 AND retired_at IS NULL',
      [tenantId, epoch],
    );
  }

  /** The configuration that wraps the tenant's newest epoch (null: managed); undefined when it has none. */
  async latestBackend(tenantId: string): Promise<{ backend_id: string | null } | undefined> {
    const rows: { backend_id: string | null }[] = await this.db.query(
      `SELECT backend_id FROM data_keys WHERE tenant_id = $1 AND retired_at IS NULL ORDER BY epoch DESC LIMIT 1`,
      [tenantId],
    );
    return rows[0];
  }

  /**
   * The tenant's oldest data key not on its current configuration, except those in `skip` (joins tenants for
   * key_backend_id, the target).
   */
  async nextToMigrate(tenantId: string, skip: string[]): Promise<MigratingKeyRow | undefined> {
    const rows: MigratingKeyRow[] = await this.db.query(
      `SELECT d.id, d.tenant_id, d.epoch, d.backend_id, d.wrapped, t.key_backend_id AS target
           FROM data_keys d JOIN tenants t ON t.id = d.tenant_id
          WHERE d.tenant_id = $1 AND d.backend_id IS DISTINCT FROM t.key_backend_id AND NOT (d.id = ANY($2::uuid[]))
          ORDER BY d.epoch LIMIT 1`,
      [tenantId, skip],
    );
    return rows[0];
  }

  /**
   * Writes a key's wrap by another configuration, only if its stored wrap is still `key.wrapped` (false:
   * someone else moved or rotated it meanwhile).
   */
  async moveWrap(
    tenantId: string,
    key: WrappedKeyRow,
    next: Rewrapped,
    backendType: KeyBackendType,
    backendId: string | null,
  ): Promise<boolean> {
    const done = returned<{ id: string }>(
      await this.db.query(
        `UPDATE data_keys SET wrapped = $3, key_ref = $4, backend_type = $5, backend_id = $6
            WHERE id = $1 AND tenant_id = $2 AND wrapped = $7 RETURNING id`,
        [key.id, tenantId, next.wrapped, next.keyRef, backendType, backendId, key.wrapped],
      ),
    );
    return done.length > 0;
  }

  /**
   * Tenants with data keys not on their current configuration and not waiting out a migration's backoff
   * (joins tenants for key_backend_id and tenant_key_migrations for next_attempt_at).
   */
  async tenantsMigrating(limit: number): Promise<string[]> {
    const rows: { tenant_id: string }[] = await this.db.query(
      `SELECT DISTINCT d.tenant_id FROM data_keys d JOIN tenants t ON t.id = d.tenant_id
              LEFT JOIN tenant_key_migrations m ON m.tenant_id = d.tenant_id
        WHERE d.backend_id IS DISTINCT FROM t.key_backend_id
          AND (m.next_attempt_at IS NULL OR m.next_attempt_at <= now())
        LIMIT $1`,
      [limit],
    );
    return rows.map((r) => r.tenant_id);
  }

  /** The tenant's data keys wrapped by one configuration (null: managed), oldest epoch first. */
  onBackend(tenantId: string, backendId: string | null): Promise<WrappedKeyRow[]> {
    return this.db.query(
      `SELECT id, tenant_id, epoch, backend_id, wrapped FROM data_keys
        WHERE tenant_id = $1 AND backend_id IS NOT DISTINCT FROM $2 ORDER BY epoch`,
      [tenantId, backendId],
    );
  }

  /** Writes a key's rewrap by the same configuration, only if its stored wrap is still `key.wrapped`. */
  async rewrap(tenantId: string, key: WrappedKeyRow, next: Rewrapped): Promise<boolean> {
    const done = returned<{ id: string }>(
      await this.db.query(
        `UPDATE data_keys SET wrapped = $3, key_ref = $4 WHERE id = $1 AND tenant_id = $2 AND wrapped = $5
           RETURNING id`,
        [key.id, tenantId, next.wrapped, next.keyRef, key.wrapped],
      ),
    );
    return done.length > 0;
  }

  /** How many of the tenant's data keys are not on its current configuration (joins tenants for key_backend_id). */
  async pendingCount(tenantId: string): Promise<number> {
    const rows: { n: number }[] = await this.db.query(
      `SELECT count(*)::int AS n FROM data_keys d JOIN tenants t ON t.id = d.tenant_id
        WHERE d.tenant_id = $1 AND d.backend_id IS DISTINCT FROM t.key_backend_id`,
      [tenantId],
    );
    return rows[0].n;
  }

  /**
   * The configurations still wrapping keys to move, the one with the newest such key first (joins tenants
   * for key_backend_id).
   */
  pendingSources(tenantId: string): Promise<{ backend_id: string | null; n: number }[]> {
    return this.db.query(
      `SELECT d.backend_id, count(*)::int AS n FROM data_keys d JOIN tenants t ON t.id = d.tenant_id
        WHERE d.tenant_id = $1 AND d.backend_id IS DISTINCT FROM t.key_backend_id
        GROUP BY d.backend_id ORDER BY max(d.epoch) DESC`,
      [tenantId],
    );
  }

  /** How many of the tenant's data keys `backendId` wraps, unless it is `exceptBackendId` (null: managed). */
  async countOnBackendUnless(
    m: EntityManager,
    tenantId: string,
    backendId: string | null,
    exceptBackendId: string | null,
  ): Promise<number> {
    const rows: { n: number }[] = await m.query(
      `SELECT count(*)::int AS n FROM data_keys
          WHERE tenant_id = $1 AND backend_id IS NOT DISTINCT FROM $2 AND backend_id IS DISTINCT FROM $3`,
      [tenantId, backendId, exceptBackendId],
    );
    return rows[0].n;
  }

  /** How many of the tenant's data keys `backendId` wraps (null: managed). */
  async countOnBackend(m: EntityManager, tenantId: string, backendId: string | null): Promise<number> {
    const rows: { n: number }[] = await m.query(
      'SELECT count(*)::int AS n FROM data_keys WHERE tenant_id = $1 AND backend_id IS NOT DISTINCT FROM $2',
      [tenantId, backendId],
    );
    return rows[0].n;
  }
}
