/**
 * Every statement on provider_apps: a tenant's OAuth app at a provider, its secret and private key sealed
 * (ProviderAppsService seals and opens them; this file only moves the envelopes).
 */
import { Inject, Injectable } from '@nestjs/common';
import { DataSource, type EntityManager } from 'typeorm';
import { returned } from '../database/sql.js';

/** An app with its sealed secrets. */
export interface ProviderAppRow {
  id: string;
  tenant_id: string;
  provider: string;
  client_id: string;
  client_secret: Buffer | null;
  private_key: Buffer | null;
  scopes: string[];
  created_at: Date;
  updated_at: Date;
}

/** What a save writes, the secrets already sealed (bound to `id`). */
export interface SavedProviderApp {
  id: string;
  tenantId: string;
  provider: string;
  clientId: string;
  clientSecret: Buffer | null;
  privateKey: Buffer | null;
  scopes: string[];
}

/** The columns of a ProviderAppRow. */
const columns =
  'id, tenant_id, provider, client_id, client_secret, private_key, scopes, created_at, updated_at';

@Injectable()
export class ProviderAppsRepository {
  constructor(@Inject(DataSource) private readonly db: DataSource) {}

  /** The id of the tenant's app at the provider, if it has one (a replacement keeps it: the seals bind to it). */
  async findId(tenantId: string, provider: string): Promise<string | undefined> {
    const existing: { id: string }[] = await this.db.query(
      'SELECT id FROM provider_apps WHERE tenant_id = $1 AND provider = $2',
      [tenantId, provider],
    );
    return existing[0]?.id;
  }

  /** Creates the tenant's app at the provider or replaces its client, secrets and scopes. */
  async upsert(m: EntityManager, app: SavedProviderApp): Promise<ProviderAppRow & { created: boolean }> {
    // xmax is 0 only on a freshly inserted row: it tells an insert from an update of the same statement.
    const rows: (ProviderAppRow & { created: boolean })[] = await m.query(
      `INSERT INTO provider_apps (id, tenant_id, provider, client_id, client_secret, private_key, scopes)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (tenant_id, provider) DO UPDATE SET client_id = EXCLUDED.client_id,
           client_secret = EXCLUDED.client_secret, private_key = EXCLUDED.private_key, scopes = EXCLUDED.scopes,
           updated_at = now()
         RETURNING ${columns}, (xmax = 0) AS created`,
      [app.id, app.tenantId, app.provider, app.clientId, app.clientSecret, app.privateKey, app.scopes],
    );
    return rows[0];
  }

  /** The tenant's app at the provider with its sealed secrets. */
  async find(tenantId: string, provider: string): Promise<ProviderAppRow | undefined> {
    const rows: ProviderAppRow[] = await this.db.query(
      `SELECT ${columns} FROM provider_apps WHERE tenant_id = $1 AND provider = $2`,
      [tenantId, provider],
    );
    return rows[0];
  }

  /** Deletes the tenant's app at the provider (with its sealed secrets); false when it had none. */
  async deleteForProvider(m: EntityManager, tenantId: string, provider: string): Promise<boolean> {
    const rows = returned<{ id: string }>(
      await m.query('DELETE FROM provider_apps WHERE tenant_id = $1 AND provider = $2 RETURNING id', [
        tenantId,
        provider,
      ]),
    );
    return rows.length > 0;
  }
}
