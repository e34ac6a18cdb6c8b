/** Admin API keys: issued once, stored as SHA-256, resolved by hash, compared in constant time. */
import { createHash, randomBytes, randomUUID, timingSafeEqual } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { Inject, Injectable } from '@nestjs/common';
import { DataSource, type EntityManager } from 'typeorm';
import { AuditService, systemActor, type Actor } from '../audit/audit.service.js';
import type { AdminPrincipal, AdminRole } from '../common/admin-access.js';
import { CustosException } from '../common/errors.js';

export interface IssuedAdminKey {
  id: string;
  name: string;
  role: AdminRole;
  key: string;
  createdAt: string;
}

const KEY_PREFIX = 'cus_';
const BOOTSTRAP_NAME = 'bootstrap';

export function hashKey(key: string): Buffer {
  return createHash('sha256').update(key, 'utf8').digest();
}

export function generateAdminKey(): string {
  return KEY_PREFIX + randomBytes(32).toString('base64url');
}

interface KeyRow {
  id: string;
  tenant_id: string | null;
  role: AdminRole;
  name: string;
  key_hash: Buffer;
}

@Injectable()
export class AdminKeysService {
  constructor(
    @Inject(DataSource) private readonly db: DataSource,
    @Inject(AuditService) private readonly audit: AuditService,
  ) {}

  /** The principal behind a presented key, or null. */
  async authenticate(presented: string): Promise<AdminPrincipal | null> {
    if (presented.length < 16 || presented.length > 512) return null;
    const digest = hashKey(presented);
    const rows: KeyRow[] = await this.db.query(
      `SELECT k.id, k.tenant_id, k.role, k.name, k.key_hash FROM admin_keys k
        WHERE k.key_hash = $1 AND k.revoked_at IS NULL`,
      [digest],
    );
    const row = rows[0];
    if (!row || !timingSafeEqual(row.key_hash, digest)) return null;
    return { keyId: row.id, tenantId: row.tenant_id, role: row.role, name: row.name };
  }

  async issue(
    actor: Actor,
    tenantId: string,
    name: string,
    role: 'admin' | 'auditor',
  ): Promise<IssuedAdminKey> {
    const key = generateAdminKey();
    const id = randomUUID();
    const createdAt = await this.db.transaction(async (m) => {
      const t: unknown[] = await m.query('SELECT 1 FROM tenants WHERE id = $1', [tenantId]);
      if (t.length === 0) throw new CustosException('not_found', 'Tenant not found');
      const rows: { created_at: Date }[] = await m.query(
        'INSERT INTO admin_keys (id, tenant_id, name, role, key_hash) VALUES ($1, $2, $3, $4, $5) RETURNING created_at',
        [id, tenantId, name, role, hashKey(key)],
      );
      await this.audit.record(
        {
          tenantId,
          action: 'admin_key.created',
          outcome: 'allowed',
          actor,
          details: { adminKeyId: id, name, role },
        },
        m,
      );
      return rows[0].created_at;
    });
    return { id, name, role, key, createdAt: createdAt.toISOString() };
  }

  /**
   * Makes sure a platform admin key exists. With a configured key, that key (hashed) is the bootstrap key.
   * Otherwise one is generated once into <dataDir>/bootstrap-admin-key (0600); returns that file's path
   * when it was written, so the caller can print the path (never the key).
   */
  async ensureBootstrapKey(
    configured: string | undefined,
    dataDir: string,
  ): Promise<{ generatedAt?: string }> {
    return this.db.transaction(async (m) => {
      await m.query('SELECT pg_advisory_xact_lock(727274002)');
      const rows: KeyRow[] = await m.query(
        `SELECT id, tenant_id, role, name, key_hash FROM admin_keys
          WHERE tenant_id IS NULL AND role = 'platform_admin' AND revoked_at IS NULL`,
      );
      if (configured) {
        const digest = hashKey(configured);
        if (rows.some((r) => timingSafeEqual(r.key_hash, digest))) return {};
        // The configured key replaces an earlier bootstrap key.
        await m.query(
          `UPDATE admin_keys SET revoked_at = now() WHERE tenant_id IS NULL AND name = $1 AND revoked_at IS NULL`,
          [BOOTSTRAP_NAME],
        );
        await this.insertBootstrap(m, digest, 'configured');
        return {};
      }
      if (rows.length > 0) return {};
      const key = generateAdminKey();
      fs.mkdirSync(dataDir, { recursive: true, mode: 0o700 });
      const file = path.join(dataDir, 'bootstrap-admin-key');
      fs.writeFileSync(file, key + '\n', { mode: 0o600 });
      fs.chmodSync(file, 0o600);
      await this.insertBootstrap(m, hashKey(key), 'generated');
      return { generatedAt: file };
    });
  }

  private async insertBootstrap(m: EntityManager, digest: Buffer, source: string): Promise<void> {
    const id = randomUUID();
    await m.query(
      `INSERT INTO admin_keys (id, tenant_id, name, role, key_hash) VALUES ($1, NULL, $2, 'platform_admin', $3)`,
      [id, BOOTSTRAP_NAME, digest],
    );
    await this.audit.record(
      {
        tenantId: null,
        action: 'admin_key.bootstrap',
        outcome: 'allowed',
        actor: systemActor,
        details: { adminKeyId: id, source },
      },
      m,
    );
  }
}
