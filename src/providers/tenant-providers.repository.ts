/**
 * Every statement on tenant_providers: the admin API's save, read, list and delete of a tenant's custom
 * providers, and ProviderRegistry's reads (a tenant's definitions all at once for its cache, one definition
 * fresh, or share-locked under an import that is about to create a connection).
 */
import { Inject, Injectable } from '@nestjs/common';
import { DataSource, type EntityManager } from 'typeorm';
import type { ProviderDefinition } from './provider-definition.js';

/** A custom provider as the admin API shows it. */
export interface TenantProviderRow {
  id: string;
  key: string;
  definition: ProviderDefinition;
  version: number;
  created_at: Date;
  updated_at: Date;
}

/** A custom provider as ProviderRegistry keeps it. */
export interface TenantProviderDefinitionRow {
  key: string;
  definition: ProviderDefinition;
}

/** The columns of a TenantProviderRow. */
const columns = 'id, key, definition, version, created_at, updated_at';

@Injectable()
export class TenantProvidersRepository {
  constructor(@Inject(DataSource) private readonly db: DataSource) {}

  /** The auth mode of the tenant's custom provider `key`, row-locked until the caller's transaction ends. */
  async lockAuthMode(m: EntityManager, tenantId: string, key: string): Promise<string | undefined> {
    const rows: { auth_mode: string }[] = await m.query(
      `SELECT definition->>'authMode' AS auth_mode FROM tenant_providers WHERE tenant_id = $1 AND key = $2
         FOR UPDATE`,
      [tenantId, key],
    );
    return rows[0]?.auth_mode;
  }

  /** Creates the custom provider (version 1, with `id`) or replaces its definition (version + 1). */
  async upsert(
    m: EntityManager,
    id: string,
    tenantId: string,
    key: string,
    definition: ProviderDefinition,
  ): Promise<TenantProviderRow & { created: boolean }> {
    // xmax is 0 only on a freshly inserted row: it tells an insert from an update of the same statement.
    const rows: (TenantProviderRow & { created: boolean })[] = await m.query(
      `INSERT INTO tenant_providers (id, tenant_id, key, definition, version)
         VALUES ($1, $2, $3, $4, 1)
         ON CONFLICT (tenant_id, key) DO UPDATE SET definition = EXCLUDED.definition,
           version = tenant_providers.version + 1, updated_at = now()
         RETURNING ${columns}, (xmax = 0) AS created`,
      [id, tenantId, key, JSON.stringify(definition)],
    );
    return rows[0];
  }

  /** The tenant's custom provider `key`. */
  async find(tenantId: string, key: string): Promise<TenantProviderRow | undefined> {
    const rows: TenantProviderRow[] = await this.db.query(
      `SELECT ${columns} FROM tenant_providers WHERE tenant_id = $1 AND key = $2`,
      [tenantId, key],
    );
    return rows[0];
  }

  /** All the tenant's custom providers. */
  listForTenant(tenantId: string): Promise<TenantProviderRow[]> {
    return this.db.query(`SELECT ${columns} FROM tenant_providers WHERE tenant_id = $1`, [tenantId]);
  }

  /** The tenant's custom provider `key`, row-locked until the caller's transaction ends (before a delete). */
  async lock(m: EntityManager, tenantId: string, key: string): Promise<TenantProviderRow | undefined> {
    const rows: TenantProviderRow[] = await m.query(
      `SELECT ${columns} FROM tenant_providers WHERE tenant_id = $1 AND key = $2 FOR UPDATE`,
      [tenantId, key],
    );
    return rows[0];
  }

  async deleteById(m: EntityManager, id: string): Promise<void> {
    await m.query('DELETE FROM tenant_providers WHERE id = $1', [id]);
  }

  /** Every custom definition of the tenant, for ProviderRegistry's per-tenant copy. */
  definitions(tenantId: string): Promise<TenantProviderDefinitionRow[]> {
    return this.db.query('SELECT key, definition FROM tenant_providers WHERE tenant_id = $1', [tenantId]);
  }

  /**
   * The definition of the tenant's custom provider `key`, through `m` (the database's own manager when
   * none); `share` locks the row FOR SHARE until the caller's transaction ends.
   */
  async definition(
    m: EntityManager | undefined,
    tenantId: string,
    key: string,
    share: boolean,
  ): Promise<ProviderDefinition | undefined> {
    const rows: { definition: ProviderDefinition }[] = await (m ?? this.db.manager).query(
      `SELECT definition FROM tenant_providers WHERE tenant_id = $1 AND key = $2${share ? ' FOR SHARE' : ''}`,
      [tenantId, key],
    );
    return rows[0]?.definition;
  }
}
