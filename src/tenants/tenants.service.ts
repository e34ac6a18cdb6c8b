import { randomUUID } from 'node:crypto';
import { Inject, Injectable } from '@nestjs/common';
import { DataSource } from 'typeorm';
import { AuditService, type Actor } from '../audit/audit.service.js';
import { CustosException } from '../common/errors.js';
import type { KeyBackendType } from '../crypto/key-backend.js';
import { returned } from '../database/sql.js';
import type { UpdateTenantInput } from './tenants.dto.js';

export interface TenantView {
  id: string;
  name: string;
  keyBackend: { type: KeyBackendType };
  allowedReturnUrls: string[];
  createdAt: string;
}

interface TenantRow {
  id: string;
  name: string;
  key_backend_type: KeyBackendType;
  allowed_return_urls: string[];
  created_at: Date;
}

const columns = 'id, name, key_backend_type, allowed_return_urls, created_at';

const view = (r: TenantRow): TenantView => ({
  id: r.id,
  name: r.name,
  keyBackend: { type: r.key_backend_type },
  allowedReturnUrls: r.allowed_return_urls,
  createdAt: r.created_at.toISOString(),
});

@Injectable()
export class TenantsService {
  constructor(
    @Inject(DataSource) private readonly db: DataSource,
    @Inject(AuditService) private readonly audit: AuditService,
  ) {}

  async createTenant(actor: Actor, name: string): Promise<TenantView> {
    const id = randomUUID();
    return this.db.transaction(async (m) => {
      const rows: TenantRow[] = await m.query(
        `INSERT INTO tenants (id, name, key_backend_type) VALUES ($1, $2, 'managed')
         RETURNING ${columns}`,
        [id, name],
      );
      await this.audit.record(
        { tenantId: id, action: 'tenant.created', outcome: 'allowed', actor, details: { name } },
        m,
      );
      return view(rows[0]);
    });
  }

  /** Changes a tenant's name or its allowed return URLs (the list is replaced, not merged). */
  async updateTenant(actor: Actor, id: string, patch: UpdateTenantInput): Promise<TenantView> {
    return this.db.transaction(async (m) => {
      const rows = returned<TenantRow>(
        await m.query(
          `UPDATE tenants SET name = COALESCE($2, name), allowed_return_urls = COALESCE($3, allowed_return_urls)
            WHERE id = $1 RETURNING ${columns}`,
          [id, patch.name ?? null, patch.allowedReturnUrls ? [...new Set(patch.allowedReturnUrls)] : null],
        ),
      );
      if (rows.length === 0) throw new CustosException('not_found', 'Tenant not found');
      await this.audit.record(
        {
          tenantId: id,
          action: 'tenant.updated',
          outcome: 'allowed',
          actor,
          details: { changed: Object.keys(patch).sort(), ...patch },
        },
        m,
      );
      return view(rows[0]);
    });
  }

  async listTenants(): Promise<TenantView[]> {
    const rows: TenantRow[] = await this.db.query(`SELECT ${columns} FROM tenants ORDER BY created_at, id`);
    return rows.map(view);
  }

  async getTenant(id: string): Promise<TenantView> {
    const rows: TenantRow[] = await this.db.query(`SELECT ${columns} FROM tenants WHERE id = $1`, [id]);
    if (rows.length === 0) throw new CustosException('not_found', 'Tenant not found');
    return view(rows[0]);
  }
}
