/**
 * The identity providers a tenant trusts to prove who a user is: issuer, signing keys (inline or by URL),
 * audiences, the claim naming the user and the algorithms accepted. One provider per issuer per tenant.
 */
import { randomUUID } from 'node:crypto';
import { Inject, Injectable, type OnModuleInit } from '@nestjs/common';
import { DataSource } from 'typeorm';
import { AuditService, type Actor } from '../audit/audit.service.js';
import { CommonException } from '../common/errors.js';
import { OutboundHttpClient } from '../common/outbound-http.js';
import type { SaveIdentityProviderInput } from './connectors.dto.js';
import type { SigningAlgorithm } from '../common/jwt-policy.js';
import { IdentityProvidersRepository, type IdentityProviderRow } from './identity-providers.repository.js';
import { jwksSummary, type PublicJwks } from './jwk.js';
import type { IdentityProviderNames } from '../tenants/identity-provider-names.js';
import { TenantsService } from '../tenants/tenants.service.js';

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
export class IdentityProvidersService implements IdentityProviderNames, OnModuleInit {
  constructor(
    @Inject(DataSource) private readonly db: DataSource,
    @Inject(IdentityProvidersRepository) private readonly identityProviders: IdentityProvidersRepository,
    @Inject(AuditService) private readonly audit: AuditService,
    @Inject(OutboundHttpClient) private readonly outbound: OutboundHttpClient,
    @Inject(TenantsService) private readonly tenants: TenantsService,
  ) {}

  /** A tenant's connect sign-in may only name one of its identity providers: tenants/ asks here. */
  onModuleInit(): void {
    this.tenants.registerIdentityProviderNames(this);
  }

  exists(tenantId: string, name: string): Promise<boolean> {
    return this.identityProviders.exists(tenantId, name);
  }

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
        const row = await this.identityProviders.upsert(m, {
          id: randomUUID(),
          tenantId,
          name,
          issuer: input.issuer,
          jwks,
          jwksUri: input.jwksUri ?? null,
          audiences: [...new Set(input.audiences)],
          userClaim: input.userClaim,
          algorithms: [...new Set(input.algorithms)],
        });
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
          throw new CommonException(
            'conflict',
            'Another identity provider of this tenant already has this issuer',
          );
      }
    }
  }

  async listIdentityProviders(tenantId: string): Promise<IdentityProviderView[]> {
    const rows = await this.identityProviders.listForTenant(tenantId);
    return rows.map(view);
  }

  async getIdentityProvider(tenantId: string, name: string): Promise<IdentityProviderView> {
    const row = await this.identityProviders.findByName(tenantId, name);
    if (!row) throw new CommonException('not_found', 'Identity provider not found');
    return view(row);
  }

  /** The tenant's provider for a token's `iss` (exact match), or null. */
  async findByIssuer(tenantId: string, issuer: string): Promise<IdentityProviderView | null> {
    const row = await this.identityProviders.findByIssuer(tenantId, issuer);
    return row ? view(row) : null;
  }

  async deleteIdentityProvider(actor: Actor, tenantId: string, name: string): Promise<void> {
    await this.db.transaction(async (m) => {
      const row = await this.identityProviders.delete(m, tenantId, name);
      if (!row) throw new CommonException('not_found', 'Identity provider not found');
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
