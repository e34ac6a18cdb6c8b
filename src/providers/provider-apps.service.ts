/**
 * Each tenant's own OAuth app at a provider (client id, secret or private key, default scopes). The secret
 * and key are sealed under the tenant's data key, bound to the app's row and field, and never returned: the
 * API shows only whether they are set. The connect flow, refresh and revocation read them through `open`.
 */
import { randomUUID } from 'node:crypto';
import { Inject, Injectable } from '@nestjs/common';
import { DataSource } from 'typeorm';
import { AuditService, type Actor } from '../audit/audit.service.js';
import { CommonException } from '../common/errors.js';
import { DataKeyService } from '../crypto/data-key.service.js';
import { ProviderAppsRepository, type ProviderAppRow } from './provider-apps.repository.js';
import { ProviderRegistry } from './provider-registry.js';
import type { ProviderDefinition } from './provider-definition.js';
import type { SaveProviderAppInput } from './provider-apps.dto.js';
import { ProviderException } from './providers.errors.js';

export interface ProviderAppView {
  provider: string;
  clientId: string;
  hasClientSecret: boolean;
  hasPrivateKey: boolean;
  scopes: string[];
  createdAt: string;
  updatedAt: string;
}

/** An app with its secrets opened, for the OAuth client. Never logged, never returned. */
export interface OpenedProviderApp {
  provider: string;
  clientId: string;
  clientSecret: string | null;
  privateKeyJwk: Record<string, unknown> | null;
  scopes: string[];
}

const view = (r: ProviderAppRow): ProviderAppView => ({
  provider: r.provider,
  clientId: r.client_id,
  hasClientSecret: r.client_secret !== null,
  hasPrivateKey: r.private_key !== null,
  scopes: r.scopes,
  createdAt: r.created_at.toISOString(),
  updatedAt: r.updated_at.toISOString(),
});

@Injectable()
export class ProviderAppsService {
  constructor(
    @Inject(DataSource) private readonly db: DataSource,
    @Inject(ProviderAppsRepository) private readonly apps: ProviderAppsRepository,
    @Inject(AuditService) private readonly audit: AuditService,
    @Inject(DataKeyService) private readonly dataKeys: DataKeyService,
    @Inject(ProviderRegistry) private readonly providers: ProviderRegistry,
  ) {}

  /** Creates or replaces the tenant's app at an OAuth provider. */
  async save(
    actor: Actor,
    tenantId: string,
    provider: string,
    input: SaveProviderAppInput,
  ): Promise<{ app: ProviderAppView; created: boolean }> {
    const definition = await this.oauthProvider(tenantId, provider);
    const method = definition.oauth2?.tokenEndpointAuthMethod;
    if (method === 'private_key_jwt' ? !input.privateKeyJwk : !input.clientSecret) {
      throw new CommonException(
        'validation_failed',
        method === 'private_key_jwt'
          ? 'privateKeyJwk is required: this provider authenticates clients with private_key_jwt'
          : 'clientSecret is required for this provider',
      );
    }
    const id = (await this.apps.findId(tenantId, provider)) ?? randomUUID();
    const seal = (field: string, value: string | undefined) =>
      value === undefined
        ? null
        : this.dataKeys.seal(tenantId, { scope: 'provider_app', recordId: id, field }, value);
    const secret = await seal('client_secret', input.clientSecret);
    const privateKey = await seal(
      'private_key',
      input.privateKeyJwk ? JSON.stringify(input.privateKeyJwk) : undefined,
    );
    const scopes = [...new Set(input.scopes ?? [])];
    return this.db.transaction(async (m) => {
      const row = await this.apps.upsert(m, {
        id,
        tenantId,
        provider,
        clientId: input.clientId,
        clientSecret: secret,
        privateKey,
        scopes,
      });
      await this.audit.record(
        {
          tenantId,
          action: 'provider_app.saved',
          outcome: 'allowed',
          actor,
          provider,
          details: {
            clientId: row.client_id,
            hasClientSecret: secret !== null,
            hasPrivateKey: privateKey !== null,
            scopes,
            created: row.created,
          },
        },
        m,
      );
      return { app: view(row), created: row.created };
    });
  }

  async get(tenantId: string, provider: string): Promise<ProviderAppView> {
    const row = await this.apps.find(tenantId, provider);
    if (!row) throw new CommonException('not_found', 'No app is configured for this provider');
    return view(row);
  }

  async delete(actor: Actor, tenantId: string, provider: string): Promise<void> {
    await this.db.transaction(async (m) => {
      const deleted = await this.apps.deleteForProvider(m, tenantId, provider);
      if (!deleted) throw new CommonException('not_found', 'No app is configured for this provider');
      await this.audit.record(
        { tenantId, action: 'provider_app.deleted', outcome: 'allowed', actor, provider, details: {} },
        m,
      );
    });
  }

  /** The app with its secrets opened, or null when the tenant has none for this provider. */
  async open(tenantId: string, provider: string): Promise<OpenedProviderApp | null> {
    const row = await this.apps.find(tenantId, provider);
    if (!row) return null;
    const open = (field: string, envelope: Buffer | null) =>
      envelope
        ? this.dataKeys.open(tenantId, { scope: 'provider_app', recordId: row.id, field }, envelope)
        : null;
    const privateKey = await open('private_key', row.private_key);
    return {
      provider: row.provider,
      clientId: row.client_id,
      clientSecret: await open('client_secret', row.client_secret),
      privateKeyJwk: privateKey ? (JSON.parse(privateKey) as Record<string, unknown>) : null,
      scopes: row.scopes,
    };
  }

  private async oauthProvider(tenantId: string, provider: string): Promise<ProviderDefinition> {
    const definition = await this.providers.get(tenantId, provider, { fresh: true });
    if (!definition) throw new ProviderException('unknown_provider', `Unknown provider "${provider}"`);
    if (definition.authMode !== 'oauth2') {
      throw new ProviderException(
        'credential_type_mismatch',
        `${provider} uses API keys; it has no OAuth app`,
      );
    }
    return definition;
  }
}
