import { randomUUID } from 'node:crypto';
import { Inject, Injectable } from '@nestjs/common';
import { DataSource } from 'typeorm';
import { AuditService, type Actor } from '../audit/audit.service.js';
import { CustosException } from '../common/errors.js';
import type { KeyBackendType } from '../crypto/key-backend.js';

export interface TenantView {
  id: string;
  name: string;
  keyBackend: { type: KeyBackendType };
  createdAt: string;
}

interface TenantRow {
  id: string;
  name: string;
  key_backend_type: KeyBackendType;
  created_at: Date;
}

const view = (r: TenantRow): TenantView => ({
  id: r.id,
  name: r.name,
  keyBackend: { type: r.key_backend_type },
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
         RETURNING id, name, key_backend_type, created_at`,
        [id, name],
      );
      await this.audit.record(
        { tenantId: id, action: 'tenant.created', outcome: 'allowed', actor, details: { name } },
        m,
      );
      return view(rows[0]);
    });
  }

  async listTenants(): Promise<TenantView[]> {
    const rows: TenantRow[] = await this.db.query(
      'SELECT id, name, key_backend_type, created_at FROM tenants ORDER BY created_at, id',
    );
    return rows.map(view);
  }

  async getTenant(id: string): Promise<TenantView> {
    const rows: TenantRow[] = await this.db.query(
      'SELECT id, name, key_backend_type, created_at FROM tenants WHERE id = $1',
      [id],
    );
    if (rows.length === 0) throw new CustosException('not_found', 'Tenant not found');
    return view(rows[0]);
  }
}
