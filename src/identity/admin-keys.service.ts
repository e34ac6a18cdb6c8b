/** Admin API keys: issued once, stored as SHA-256, resolved by hash, compared in constant time. */
import { createHash, randomBytes, randomUUID, timingSafeEqual } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { Inject, Injectable } from '@nestjs/common';
import { DataSource, type EntityManager } from 'typeorm';
import { AuditService, systemActor, type Actor } from '../audit/audit.service.js';
import type { AdminPrincipal, AdminRole } from '../common/admin-access.js';
import { CommonException } from '../common/errors.js';
import { AdminKeysRepository, type TenantAdminKeyRow } from './admin-keys.repository.js';
import { TenantsRepository } from '../tenants/tenants.repository.js';

export interface IssuedAdminKey {
  id: string;
  name: string;
  role: AdminRole;
  key: string;
  createdAt: string;
}

const KEY_PREFIX = 'cus_';
const BOOTSTRAP_NAME = 'bootstrap';

/** An admin key as the API shows it after issue: never the key, never its hash. */
export interface AdminKeyView {
  id: string;
  name: string;
  role: 'admin' | 'auditor';
  createdAt: string;
  revokedAt: string | null;
}

function adminKeyView(row: TenantAdminKeyRow): AdminKeyView {
  return {
    id: row.id,
    name: row.name,
    role: row.role,
    createdAt: row.created_at.toISOString(),
    revokedAt: row.revoked_at?.toISOString() ?? null,
  };
}

export function hashKey(key: string): Buffer {
  return createHash('sha256').update(key, 'utf8').digest();
}

export function generateAdminKey(): string {
  return KEY_PREFIX + randomBytes(32).toString('base64url');
}

@Injectable()
export class AdminKeysService {
  constructor(
    @Inject(DataSource) private readonly db: DataSource,
    @Inject(AdminKeysRepository) private readonly keys: AdminKeysRepository,
    @Inject(AuditService) private readonly audit: AuditService,
    @Inject(TenantsRepository) private readonly tenants: TenantsRepository,
  ) {}

  /** The principal behind a presented key, or null. */
  async authenticate(presented: string): Promise<AdminPrincipal | null> {
    if (presented.length < 16 || presented.length > 512) return null;
    const digest = hashKey(presented);
    const row = await this.keys.findLiveByHash(digest);
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
      if (!(await this.tenants.exists(tenantId, m)))
        throw new CommonException('not_found', 'Tenant not found');
      const created = await this.keys.insertTenantKey(m, { id, tenantId, name, role, keyHash: hashKey(key) });
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
      return created;
    });
    return { id, name, role, key, createdAt: createdAt.toISOString() };
  }

  /** The tenant's keys as its admins see them (never the key or its hash), revoked ones included. */
  async list(tenantId: string): Promise<AdminKeyView[]> {
    if (!(await this.tenants.exists(tenantId))) throw new CommonException('not_found', 'Tenant not found');
    return (await this.keys.listForTenant(tenantId)).map(adminKeyView);
  }

  /**
   * Revokes one of the tenant's keys: it stops authenticating at once (keys are looked up on every request,
   * never cached). A key already revoked, or another tenant's, is 404.
   */
  async revoke(actor: Actor, tenantId: string, keyId: string): Promise<AdminKeyView> {
    return this.db.transaction(async (m) => {
      const row = await this.keys.revokeTenantKey(m, tenantId, keyId);
      if (!row) throw new CommonException('not_found', 'Admin key not found');
      await this.audit.record(
        {
          tenantId,
          action: 'admin_key.revoked',
          outcome: 'allowed',
          actor,
          details: { adminKeyId: row.id, name: row.name, role: row.role },
        },
        m,
      );
      return adminKeyView(row);
    });
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
      await this.keys.lockBootstrap(m);
      const rows = await this.keys.livePlatformKeys(m);
      if (configured) {
        const digest = hashKey(configured);
        if (rows.some((r) => timingSafeEqual(r.key_hash, digest))) return {};
        // The configured key replaces an earlier bootstrap key.
        await this.keys.revokePlatformKeysNamed(m, BOOTSTRAP_NAME);
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
    await this.keys.insertPlatformKey(m, id, BOOTSTRAP_NAME, digest);
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
