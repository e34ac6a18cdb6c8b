import { randomBytes, randomUUID } from 'node:crypto';
import { Inject, Injectable } from '@nestjs/common';
import { DataSource } from 'typeorm';
import { AuditService, type Actor } from '../audit/audit.service.js';
import { CustosException } from '../common/errors.js';
import { OutboundHttpClient } from '../common/outbound-http.js';
import { DataKeyService } from '../crypto/data-key.service.js';
import type { KeyBackendType } from '../crypto/key-backend.js';
import { returned } from '../database/sql.js';
import type { UpdateTenantInput } from './tenants.dto.js';

export interface TenantView {
  id: string;
  name: string;
  keyBackend: { type: KeyBackendType };
  allowedReturnUrls: string[];
  webhookUrl: string | null;
  connectLogin: { identityProvider: string; clientId: string } | null;
  createdAt: string;
}

interface TenantRow {
  id: string;
  name: string;
  key_backend_type: KeyBackendType;
  allowed_return_urls: string[];
  webhook_url: string | null;
  connect_login: { identityProvider: string; clientId: string } | null;
  created_at: Date;
}

const columns = 'id, name, key_backend_type, allowed_return_urls, webhook_url, connect_login, created_at';

const view = (r: TenantRow): TenantView => ({
  id: r.id,
  name: r.name,
  keyBackend: { type: r.key_backend_type },
  allowedReturnUrls: r.allowed_return_urls,
  webhookUrl: r.webhook_url,
  connectLogin: r.connect_login,
  createdAt: r.created_at.toISOString(),
});

@Injectable()
export class TenantsService {
  constructor(
    @Inject(DataSource) private readonly db: DataSource,
    @Inject(AuditService) private readonly audit: AuditService,
    @Inject(DataKeyService) private readonly dataKeys: DataKeyService,
    @Inject(OutboundHttpClient) private readonly outbound: OutboundHttpClient,
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
      const idp: unknown[] = await this.db.query(
        'SELECT 1 FROM identity_providers WHERE tenant_id = $1 AND name = $2',
        [id, patch.connectLogin.identityProvider],
      );
      if (idp.length === 0) {
        throw new CustosException(
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
    const current: { webhook_secret: Buffer | null }[] = await this.db.query(
      'SELECT webhook_secret FROM tenants WHERE id = $1',
      [id],
    );
    if (current.length === 0) throw new CustosException('not_found', 'Tenant not found');
    const issue =
      patch.rotateWebhookSecret === true || (patch.webhookUrl && current[0].webhook_secret === null);
    const secret = issue ? 'whsec_' + randomBytes(32).toString('base64url') : undefined;
    const sealed = secret
      ? await this.dataKeys.seal(id, { scope: 'tenant', recordId: id, field: 'webhook_secret' }, secret)
      : null;
    return this.db.transaction(async (m) => {
      const rows = returned<TenantRow>(
        await m.query(
          `UPDATE tenants SET name = COALESCE($2, name), allowed_return_urls = COALESCE($3, allowed_return_urls),
             webhook_url = CASE WHEN $4::boolean THEN $5 ELSE webhook_url END,
             webhook_secret = CASE WHEN $4::boolean AND $5::text IS NULL THEN NULL
                                   ELSE COALESCE($6, webhook_secret) END,
             connect_login = CASE WHEN $7::boolean THEN $8::jsonb ELSE connect_login END,
             connect_login_secret = CASE WHEN $7::boolean THEN $9 ELSE connect_login_secret END
            WHERE id = $1 RETURNING ${columns}`,
          [
            id,
            patch.name ?? null,
            patch.allowedReturnUrls ? [...new Set(patch.allowedReturnUrls)] : null,
            patch.webhookUrl !== undefined,
            patch.webhookUrl ?? null,
            sealed,
            patch.connectLogin !== undefined,
            patch.connectLogin
              ? JSON.stringify({
                  identityProvider: patch.connectLogin.identityProvider,
                  clientId: patch.connectLogin.clientId,
                })
              : null,
            loginSecret,
          ],
        ),
      );
      if (rows.length === 0) throw new CustosException('not_found', 'Tenant not found');
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
      return secret ? { ...view(rows[0]), webhookSecret: secret } : view(rows[0]);
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
