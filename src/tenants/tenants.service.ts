import { randomBytes, randomUUID } from 'node:crypto';
import { Inject, Injectable } from '@nestjs/common';
import { DataSource } from 'typeorm';
import { AuditService, type Actor } from '../audit/audit.service.js';
import { CommonException } from '../common/errors.js';
import { OutboundHttpClient } from '../common/outbound-http.js';
import { DataKeyService } from '../crypto/data-key.service.js';
import type { KeyBackendType } from '../crypto/key-backend.js';
import type { UpdateTenantInput } from './tenants.dto.js';
import { TenantsRepository, type TenantRow } from './tenants.repository.js';
import type { IdentityProviderNames } from './identity-provider-names.js';
import {
  statusOf,
  TenantDeletionService,
  type TenantDeletionView,
  type TenantStatus,
} from './tenant-deletion.service.js';

export interface TenantView {
  id: string;
  name: string;
  /** `deleting` from the deletion request until the tenant is shredded (then it is unknown: 404). */
  status: TenantStatus;
  deletionRequestedAt: string | null;
  keyBackend: { type: KeyBackendType };
  allowedReturnUrls: string[];
  webhookUrl: string | null;
  connectLogin: { identityProvider: string; clientId: string } | null;
  /** Whether a grant wider than a connector's allowed scopes is handed out when it cannot be narrowed. */
  scopePassThrough: boolean;
  createdAt: string;
}

const view = (r: TenantRow): TenantView => ({
  id: r.id,
  name: r.name,
  status: statusOf(r),
  deletionRequestedAt: r.deletion_requested_at?.toISOString() ?? null,
  keyBackend: { type: r.key_backend_type },
  allowedReturnUrls: r.allowed_return_urls,
  webhookUrl: r.webhook_url,
  connectLogin: r.connect_login,
  scopePassThrough: r.scope_pass_through,
  createdAt: r.created_at.toISOString(),
});

@Injectable()
export class TenantsService {
  constructor(
    @Inject(DataSource) private readonly db: DataSource,
    @Inject(TenantsRepository) private readonly tenants: TenantsRepository,
    @Inject(AuditService) private readonly audit: AuditService,
    @Inject(DataKeyService) private readonly dataKeys: DataKeyService,
    @Inject(OutboundHttpClient) private readonly outbound: OutboundHttpClient,
    @Inject(TenantDeletionService) private readonly deletion: TenantDeletionService,
  ) {}

  private identityProviders: IdentityProviderNames | undefined;

  /** Called by identity/ at start-up: see identity-provider-names.ts. */
  registerIdentityProviderNames(names: IdentityProviderNames): void {
    this.identityProviders = names;
  }

  async createTenant(actor: Actor, name: string): Promise<TenantView> {
    const id = randomUUID();
    return this.db.transaction(async (m) => {
      const row = await this.tenants.create(m, id, name);
      await this.audit.record(
        { tenantId: id, action: 'tenant.created', outcome: 'allowed', actor, details: { name } },
        m,
      );
      return view(row);
    });
  }

  /** Changes a tenant's name or its allowed return URLs (the list is replaced, not merged). */
  /**
   * Changes a tenant's name, allowed return URLs (the list is replaced, not merged) or webhook. Setting a
   * webhook URL for the first time, or `rotateWebhookSecret`, issues a signing secret, returned only in this
   * response (`webhookSecret`) and stored sealed.
   */
  async updateTenant(
    actor: Actor,
    id: string,
    patch: UpdateTenantInput,
  ): Promise<TenantView & { webhookSecret?: string }> {
    if (patch.webhookUrl) await this.outbound.assertUrlAllowed(patch.webhookUrl);
    if (patch.connectLogin) {
      // Fails closed: without identity/ loaded there is no way to know, and the change is refused (500).
      if (!this.identityProviders) throw new Error('no identity provider lookup is registered');
      if (!(await this.identityProviders.exists(id, patch.connectLogin.identityProvider))) {
        throw new CommonException(
          'validation_failed',
          `connectLogin names identity provider "${patch.connectLogin.identityProvider}", which this tenant does not have`,
        );
      }
    }
    const loginSecret = patch.connectLogin
      ? await this.dataKeys.seal(
          id,
          { scope: 'tenant', recordId: id, field: 'connect_login_secret' },
          patch.connectLogin.clientSecret,
        )
      : null;
    const current = await this.tenants.webhookSecret(id);
    if (!current) throw new CommonException('not_found', 'Tenant not found');
    const issue = patch.rotateWebhookSecret === true || (patch.webhookUrl && current.webhook_secret === null);
    const secret = issue ? 'whsec_' + randomBytes(32).toString('base64url') : undefined;
    const sealed = secret
      ? await this.dataKeys.seal(id, { scope: 'tenant', recordId: id, field: 'webhook_secret' }, secret)
      : null;
    return this.db.transaction(async (m) => {
      const row = await this.tenants.update(m, id, {
        name: patch.name ?? null,
        allowedReturnUrls: patch.allowedReturnUrls ? [...new Set(patch.allowedReturnUrls)] : null,
        setWebhook: patch.webhookUrl !== undefined,
        webhookUrl: patch.webhookUrl ?? null,
        webhookSecret: sealed,
        setConnectLogin: patch.connectLogin !== undefined,
        connectLogin: patch.connectLogin
          ? {
              identityProvider: patch.connectLogin.identityProvider,
              clientId: patch.connectLogin.clientId,
            }
          : null,
        connectLoginSecret: loginSecret,
        scopePassThrough: patch.scopePassThrough ?? null,
      });
      if (!row) throw new CommonException('not_found', 'Tenant not found');
      const { rotateWebhookSecret: _rotate, connectLogin, ...rest } = patch;
      const shown = {
        ...rest,
        ...(connectLogin !== undefined
          ? {
              connectLogin: connectLogin
                ? { identityProvider: connectLogin.identityProvider, clientId: connectLogin.clientId }
                : null,
            }
          : {}),
      };
      await this.audit.record(
        {
          tenantId: id,
          action: 'tenant.updated',
          outcome: 'allowed',
          actor,
          details: {
            changed: Object.keys(patch).sort(),
            ...shown,
            webhookSecretIssued: secret !== undefined,
          },
        },
        m,
      );
      return secret ? { ...view(row), webhookSecret: secret } : view(row);
    });
  }

  async listTenants(): Promise<TenantView[]> {
    const rows = await this.tenants.list();
    return rows.map(view);
  }

  async getTenant(id: string): Promise<TenantView> {
    const row = await this.tenants.get(id);
    if (!row) throw new CommonException('not_found', 'Tenant not found');
    return view(row);
  }

  /**
   * Deletes a tenant (platform admin): its credentials stop working at once and its tokens are queued for
   * revocation at their providers; a worker job then crypto-shreds it (tenant-deletion.service.ts).
   * `confirmName` must be the tenant's current name (else 400 validation_failed on `confirm`); unknown: 404.
   * Asking again while it is being deleted changes nothing and answers its status.
   */
  deleteTenant(actor: Actor, tenantId: string, opts: { confirmName: string }): Promise<TenantDeletionView> {
    return this.deletion.requestDeletion(actor, tenantId, opts.confirmName);
  }

  /** Where a tenant's deletion stands (`active` when none was requested); 404 once it has been shredded. */
  deletionStatus(tenantId: string): Promise<TenantDeletionView> {
    return this.deletion.status(tenantId);
  }
}
