/**
 * Every statement on the identity_providers table outside the token endpoint's decision read
 * (connections/decision-query.ts, one statement over several tables): saving (one upsert that tells an insert
 * from an update), reads by name or issuer, deletion, and whether a name exists (asked by tenants/ through
 * tenants/identity-provider-names.ts, since tenants/ sits below identity/).
 */
import { Inject, Injectable } from '@nestjs/common';
import { DataSource, type EntityManager } from 'typeorm';
import type { SigningAlgorithm } from '../common/jwt-policy.js';
import { returned } from '../database/sql.js';
import type { PublicJwks } from './jwk.js';

/** An identity provider as stored. */
export interface IdentityProviderRow {
  id: string;
  tenant_id: string;
  name: string;
  issuer: string;
  jwks: PublicJwks | null;
  jwks_uri: string | null;
  audiences: string[];
  user_claim: string;
  algorithms: SigningAlgorithm[];
  created_at: Date;
  updated_at: Date;
}

/** The columns of an IdentityProviderRow. */
const columns = `id, tenant_id, name, issuer, jwks, jwks_uri, audiences, user_claim, algorithms, created_at,
  updated_at`;

/** What saving an identity provider writes; `id` is used only when the name is new to the tenant. */
export interface SavedIdentityProvider {
  id: string;
  tenantId: string;
  name: string;
  issuer: string;
  jwks: PublicJwks | null;
  jwksUri: string | null;
  audiences: string[];
  userClaim: string;
  algorithms: SigningAlgorithm[];
}

@Injectable()
export class IdentityProvidersRepository {
  constructor(@Inject(DataSource) private readonly db: DataSource) {}

  /**
   * Inserts the tenant's provider called `name`, or replaces its settings; `created` tells which. Arbitrates on
   * the name only: a clash on the issuer index (uq_identity_providers_tenant_issuer) is thrown as the driver's error.
   */
  async upsert(
    m: EntityManager,
    p: SavedIdentityProvider,
  ): Promise<IdentityProviderRow & { created: boolean }> {
    // xmax is 0 only on a freshly inserted row: it tells an insert from an update of the same statement.
    const rows: (IdentityProviderRow & { created: boolean })[] = await m.query(
      `INSERT INTO identity_providers (id, tenant_id, name, issuer, jwks, jwks_uri, audiences, user_claim,
             algorithms)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
           ON CONFLICT (tenant_id, name) DO UPDATE SET issuer = EXCLUDED.issuer, jwks = EXCLUDED.jwks,
             jwks_uri = EXCLUDED.jwks_uri, audiences = EXCLUDED.audiences, user_claim = EXCLUDED.user_claim,
             algorithms = EXCLUDED.algorithms, updated_at = now()
           RETURNING ${columns}, (xmax = 0) AS created`,
      [
        p.id,
        p.tenantId,
        p.name,
        p.issuer,
        p.jwks === null ? null : JSON.stringify(p.jwks),
        p.jwksUri,
        p.audiences,
        p.userClaim,
        p.algorithms,
      ],
    );
    return rows[0];
  }

  /** The tenant's identity providers, by name. */
  listForTenant(tenantId: string): Promise<IdentityProviderRow[]> {
    return this.db.query(`SELECT ${columns} FROM identity_providers WHERE tenant_id = $1 ORDER BY name`, [
      tenantId,
    ]);
  }

  /** The tenant's provider called `name`. */
  async findByName(tenantId: string, name: string): Promise<IdentityProviderRow | undefined> {
    const rows: IdentityProviderRow[] = await this.db.query(
      `SELECT ${columns} FROM identity_providers WHERE tenant_id = $1 AND name = $2`,
      [tenantId, name],
    );
    return rows[0];
  }

  /** Whether the tenant has an identity provider of that name. */
  async exists(tenantId: string, name: string): Promise<boolean> {
    const rows: unknown[] = await this.db.query(
      'SELECT 1 FROM identity_providers WHERE tenant_id = $1 AND name = $2',
      [tenantId, name],
    );
    return rows.length > 0;
  }

  /** The tenant's provider for an issuer (exact match). */
  async findByIssuer(tenantId: string, issuer: string): Promise<IdentityProviderRow | undefined> {
    const rows: IdentityProviderRow[] = await this.db.query(
      `SELECT ${columns} FROM identity_providers WHERE tenant_id = $1 AND issuer = $2`,
      [tenantId, issuer],
    );
    return rows[0];
  }

  /** Deletes the tenant's provider called `name`; returns it, or undefined when there was none. */
  async delete(m: EntityManager, tenantId: string, name: string): Promise<IdentityProviderRow | undefined> {
    const rows = returned<IdentityProviderRow>(
      await m.query(
        `DELETE FROM identity_providers WHERE tenant_id = $1 AND name = $2 RETURNING ${columns}`,
        [tenantId, name],
      ),
    );
    return rows[0];
  }
}
