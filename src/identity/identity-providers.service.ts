/**
 * The identity providers a tenant trusts to prove who a user is: issuer, signing keys (inline or by URL),
 * audiences, the claim naming the user and the algorithms accepted. One provider per issuer per tenant.
 */
import { randomUUID } from 'node:crypto';
import { Inject, Injectable } from '@nestjs/common';
import { DataSource } from 'typeorm';
import { AuditService, type Actor } from '../audit/audit.service.js';
import { CustosException } from '../common/errors.js';
import { OutboundHttpClient } from '../common/outbound-http.js';
import { returned } from '../database/sql.js';
import type { SaveIdentityProviderInput } from './connectors.dto.js';
import type { SigningAlgorithm } from '../common/jwt-policy.js';
import { jwksSummary, type PublicJwks } from './jwk.js';

export interface IdentityProviderView {
  name: string;
  issuer: string;
  jwksUri: string | null;
  jwks: PublicJwks | null;
  audiences: string[];
  userClaim: string;
  algorithms: SigningAlgorithm[];
  createdAt: string;
  updatedAt: string;
}

interface IdentityProviderRow {
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

const columns = `id, tenant_id, name, issuer, jwks, jwks_uri, audiences, user_claim, algorithms, created_at,
  updated_at`;

const ISSUER_INDEX = 'uq_identity_providers_tenant_issuer';

function view(r: IdentityProviderRow): IdentityProviderView {
  return {
    name: r.name,
    issuer: r.issuer,
    jwksUri: r.jwks_uri,
    jwks: r.jwks,
    audiences: r.audiences,
    userClaim: r.user_claim,
    algorithms: r.algorithms,
    createdAt: r.created_at.toISOString(),
    updatedAt: r.updated_at.toISOString(),
  };
}

function violatedConstraint(err: unknown): string | undefined {
  const e = err as { driverError?: { code?: string; constraint?: string } };
  return e.driverError?.code === '23505' ? e.driverError.constraint : undefined;
}

@Injectable()
export class IdentityProvidersService {
  constructor(
    @Inject(DataSource) private readonly db: DataSource,
    @Inject(AuditService) private readonly audit: AuditService,
    @Inject(OutboundHttpClient) private readonly outbound: OutboundHttpClient,
  ) {}

  /** Creates or replaces the tenant's identity provider called `name`. */
  async saveIdentityProvider(
    actor: Actor,
    tenantId: string,
    name: string,
    input: SaveIdentityProviderInput,
  ): Promise<{ identityProvider: IdentityProviderView; created: boolean }> {
    if (input.jwksUri !== undefined) await this.outbound.assertUrlAllowed(input.jwksUri);
    const jwks = (input.jwks as PublicJwks | undefined) ?? null;
    const attempt = () =>
      this.db.transaction(async (m) => {
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
            randomUUID(),
            tenantId,
            name,
            input.issuer,
            jwks === null ? null : JSON.stringify(jwks),
            input.jwksUri ?? null,
            [...new Set(input.audiences)],
            input.userClaim,
            [...new Set(input.algorithms)],
          ],
        );
        const row = rows[0];
        await this.audit.record(
          {
            tenantId,
            action: 'identity_provider.saved',
            outcome: 'allowed',
            actor,
            details: {
              name,
              issuer: row.issuer,
              created: row.created,
              ...(row.jwks_uri ? { jwksUri: row.jwks_uri } : {}),
              ...(row.jwks ? jwksSummary(row.jwks) : {}),
              audiences: row.audiences,
              userClaim: row.user_claim,
              algorithms: row.algorithms,
            },
          },
          m,
        );
        return { identityProvider: view(row), created: row.created };
      });
    for (let tries = 1; ; tries++) {
      try {
        return await attempt();
      } catch (err) {
        if (violatedConstraint(err) !== ISSUER_INDEX) throw err;
        // ON CONFLICT arbitrates on the name only: two first saves of one name and issuer can collide on the
        // issuer index instead. The winner has committed by now, so a second try takes the update path.
        if (tries >= 2)
          throw new CustosException(
            'conflict',
            'Another identity provider of this tenant already has this issuer',
          );
      }
    }
  }

  async listIdentityProviders(tenantId: string): Promise<IdentityProviderView[]> {
    const rows: IdentityProviderRow[] = await this.db.query(
      `SELECT ${columns} FROM identity_providers WHERE tenant_id = $1 ORDER BY name`,
      [tenantId],
    );
    return rows.map(view);
  }

  async getIdentityProvider(tenantId: string, name: string): Promise<IdentityProviderView> {
    const rows: IdentityProviderRow[] = await this.db.query(
      `SELECT ${columns} FROM identity_providers WHERE tenant_id = $1 AND name = $2`,
      [tenantId, name],
    );
    if (rows.length === 0) throw new CustosException('not_found', 'Identity provider not found');
    return view(rows[0]);
  }

  /** The tenant's provider for a token's `iss` (exact match), or null. */
  async findByIssuer(tenantId: string, issuer: string): Promise<IdentityProviderView | null> {
    const rows: IdentityProviderRow[] = await this.db.query(
      `SELECT ${columns} FROM identity_providers WHERE tenant_id = $1 AND issuer = $2`,
      [tenantId, issuer],
    );
    return rows[0] ? view(rows[0]) : null;
  }

  async deleteIdentityProvider(actor: Actor, tenantId: string, name: string): Promise<void> {
    await this.db.transaction(async (m) => {
      const rows = returned<IdentityProviderRow>(
        await m.query(
          `DELETE FROM identity_providers WHERE tenant_id = $1 AND name = $2 RETURNING ${columns}`,
          [tenantId, name],
        ),
      );
      const row = rows[0];
      if (!row) throw new CustosException('not_found', 'Identity provider not found');
      await this.audit.record(
        {
          tenantId,
          action: 'identity_provider.deleted',
          outcome: 'allowed',
          actor,
          details: { name, issuer: row.issuer },
        },
        m,
      );
    });
  }
}
