/**
 * Every statement on the admin_keys table: the lookup of a presented key by its hash, issuing a tenant's key,
 * and the platform bootstrap key (its advisory lock, the live platform keys, replacing an earlier bootstrap key).
 * Only key hashes are stored; the bootstrap statements run in the caller's transaction. The lookup reads whether
 * the key's tenant is being deleted (tenants.deletion_requested_at).
 */
import { Inject, Injectable } from '@nestjs/common';
import { DataSource, type EntityManager } from 'typeorm';
import { returned } from '../database/sql.js';
import type { AdminRole } from '../common/admin-access.js';

/** An admin key as authentication reads it. */
export interface AdminKeyRow {
  id: string;
  tenant_id: string | null;
  role: AdminRole;
  name: string;
  key_hash: Buffer;
}

/** A tenant's new admin key, its key already hashed. */
export interface NewTenantAdminKey {
  id: string;
  tenantId: string;
  name: string;
  role: 'admin' | 'auditor';
  keyHash: Buffer;
}

/** A tenant's key as its admins see it: never the hash. */
export interface TenantAdminKeyRow {
  id: string;
  name: string;
  role: 'admin' | 'auditor';
  created_at: Date;
  revoked_at: Date | null;
}

@Injectable()
export class AdminKeysRepository {
  constructor(@Inject(DataSource) private readonly db: DataSource) {}

  /**
   * The live (unrevoked) key with this SHA-256, if any. A key of a tenant being deleted is none: refused as an
   * unknown key from the moment the deletion is requested (same statement, one probe of the tenant's row).
   */
  async findLiveByHash(digest: Buffer): Promise<AdminKeyRow | undefined> {
    const rows: AdminKeyRow[] = await this.db.query(
      `SELECT k.id, k.tenant_id, k.role, k.name, k.key_hash FROM admin_keys k
        WHERE k.key_hash = $1 AND k.revoked_at IS NULL
          AND NOT EXISTS (SELECT 1 FROM tenants t WHERE t.id = k.tenant_id AND t.deletion_requested_at IS NOT NULL)`,
      [digest],
    );
    return rows[0];
  }

  /** The tenant's keys, live and revoked, oldest first. */
  listForTenant(tenantId: string): Promise<TenantAdminKeyRow[]> {
    return this.db.query(
      `SELECT id, name, role, created_at, revoked_at FROM admin_keys WHERE tenant_id = $1 ORDER BY created_at, id`,
      [tenantId],
    );
  }

  /** Revokes one of the tenant's live keys; returns it, or undefined when there is no such live key. */
  async revokeTenantKey(
    m: EntityManager,
    tenantId: string,
    keyId: string,
  ): Promise<TenantAdminKeyRow | undefined> {
    const rows = returned<TenantAdminKeyRow>(
      await m.query(
        `UPDATE admin_keys SET revoked_at = now() WHERE id = $1 AND tenant_id = $2 AND revoked_at IS NULL
         RETURNING id, name, role, created_at, revoked_at`,
        [keyId, tenantId],
      ),
    );
    return rows[0];
  }

  /** Stores a tenant's key; returns its creation time. */
  async insertTenantKey(m: EntityManager, k: NewTenantAdminKey): Promise<Date> {
    const rows: { created_at: Date }[] = await m.query(
      'INSERT INTO admin_keys (id, tenant_id, name, role, key_hash) VALUES ($1, $2, $3, $4, $5) RETURNING created_at',
      [k.id, k.tenantId, k.name, k.role, k.keyHash],
    );
    return rows[0].created_at;
  }

  /**
   * Takes the bootstrap advisory lock until the caller's transaction ends, so that processes starting together
   * create one platform key, not one each.
   */
  async lockBootstrap(m: EntityManager): Promise<void> {
    await m.query('SELECT pg_advisory_xact_lock(727274002)');
  }

  /** The live platform admin keys. */
  livePlatformKeys(m: EntityManager): Promise<AdminKeyRow[]> {
    return m.query(
      `SELECT id, tenant_id, role, name, key_hash FROM admin_keys
          WHERE tenant_id IS NULL AND role = 'platform_admin' AND revoked_at IS NULL`,
    );
  }

  /** Revokes the live platform keys called `name`. */
  async revokePlatformKeysNamed(m: EntityManager, name: string): Promise<void> {
    await m.query(
      `UPDATE admin_keys SET revoked_at = now() WHERE tenant_id IS NULL AND name = $1 AND revoked_at IS NULL`,
      [name],
    );
  }

  /** Stores a platform admin key, its key already hashed. */
  async insertPlatformKey(m: EntityManager, id: string, name: string, keyHash: Buffer): Promise<void> {
    await m.query(
      `INSERT INTO admin_keys (id, tenant_id, name, role, key_hash) VALUES ($1, NULL, $2, 'platform_admin', $3)`,
      [id, name, keyHash],
    );
  }
}
