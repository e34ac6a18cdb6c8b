/**
 * The connector registry: tenant admins register, change, disable and delete connectors; client
 * authentication (identity/client-auth.ts) looks them up. A client secret is shown once and stored only as its
 * SHA-256; every change commits together with its audit event.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { Inject, Injectable } from '@nestjs/common';
import { DataSource, type EntityManager } from 'typeorm';
import { AuditService, type Actor } from '../audit/audit.service.js';
import { CommonException } from '../common/errors.js';
import { OutboundHttpClient } from '../common/outbound-http.js';
import type { ProviderDefinition } from '../providers/provider-definition.js';
import { ProviderRegistry } from '../providers/provider-registry.js';
import { hashKey } from './admin-keys.service.js';
import type { ConnectorAuthMethod, ConnectorDelegation } from './connector.entity.js';
import { ConnectorsRepository, type ConnectorRow } from './connectors.repository.js';
import type { CreateConnectorInput, UpdateConnectorInput } from './connectors.dto.js';
import { jwksSummary, type PublicJwks } from './jwk.js';

/** A connector as the token endpoint sees it once authenticated. */
export interface ConnectorPrincipal {
  connectorId: string;
  tenantId: string;
  clientId: string;
  name: string;
  owner: string | null;
  delegation: ConnectorDelegation;
  authMethod: ConnectorAuthMethod;
  allowedProviders: string[];
  allowedScopes: Record<string, string[]>;
}

/** A connector with what is needed to verify its private_key_jwt assertion. */
export interface ConnectorRegistration extends ConnectorPrincipal {
  jwks: PublicJwks | null;
  jwksUri: string | null;
}

/** Everything client authentication needs, with the row version that lets a cached copy be checked. */
export interface ConnectorCredentials extends ConnectorRegistration {
  secretHash: Buffer | null;
  version: number;
  disabled: boolean;
}

export interface ConnectorView {
  id: string;
  clientId: string;
  /** Present only in the response that created or rotated it. */
  clientSecret?: string;
  name: string;
  owner: string | null;
  allowedProviders: string[];
  allowedScopes: Record<string, string[]>;
  delegation: ConnectorDelegation;
  auth: { method: ConnectorAuthMethod; jwks?: PublicJwks; jwksUri?: string };
  disabled: boolean;
  createdAt: string;
  updatedAt: string;
}

const CLIENT_ID_PREFIX = 'cus_ci_';
const CLIENT_SECRET_PREFIX = 'cus_cs_';
const CLIENT_ID = /^cus_ci_[A-Za-z0-9_-]{22}$/;

export function generateClientId(): string {
  return CLIENT_ID_PREFIX + randomBytes(16).toString('base64url');
}

export function generateClientSecret(): string {
  return CLIENT_SECRET_PREFIX + randomBytes(32).toString('base64url');
}

export function connectorActor(p: ConnectorPrincipal): Actor {
  return { type: 'connector', id: p.connectorId };
}

function view(r: ConnectorRow): ConnectorView {
  const auth: ConnectorView['auth'] = { method: r.auth_method };
  if (r.jwks) auth.jwks = r.jwks;
  if (r.jwks_uri) auth.jwksUri = r.jwks_uri;
  return {
    id: r.id,
    clientId: r.client_id,
    name: r.name,
    owner: r.owner,
    allowedProviders: r.allowed_providers,
    allowedScopes: r.allowed_scopes,
    delegation: r.delegation,
    auth,
    disabled: r.disabled_at !== null,
    createdAt: r.created_at.toISOString(),
    updatedAt: r.updated_at.toISOString(),
  };
}

function principal(r: ConnectorRow): ConnectorPrincipal {
  return {
    connectorId: r.id,
    tenantId: r.tenant_id,
    clientId: r.client_id,
    name: r.name,
    owner: r.owner,
    delegation: r.delegation,
    authMethod: r.auth_method,
    allowedProviders: r.allowed_providers,
    allowedScopes: r.allowed_scopes,
  };
}

/** How a connector authenticates, for audit details: never a secret, and key ids rather than keys. */
function authSummary(r: ConnectorRow): Record<string, unknown> {
  return {
    method: r.auth_method,
    ...(r.jwks_uri ? { jwksUri: r.jwks_uri } : {}),
    ...(r.jwks ? jwksSummary(r.jwks) : {}),
  };
}

const unique = (xs: string[]) => [...new Set(xs)];

@Injectable()
export class ConnectorsService {
  constructor(
    @Inject(DataSource) private readonly db: DataSource,
    @Inject(ConnectorsRepository) private readonly connectors: ConnectorsRepository,
    @Inject(AuditService) private readonly audit: AuditService,
    @Inject(ProviderRegistry) private readonly providers: ProviderRegistry,
    @Inject(OutboundHttpClient) private readonly outbound: OutboundHttpClient,
  ) {}

  async createConnector(actor: Actor, tenantId: string, input: CreateConnectorInput): Promise<ConnectorView> {
    const policy = await this.checkPolicy(tenantId, input.allowedProviders, input.allowedScopes ?? {});
    const auth = input.auth;
    const jwks = auth.method === 'private_key_jwt' ? ((auth.jwks as PublicJwks | undefined) ?? null) : null;
    const jwksUri = auth.method === 'private_key_jwt' ? (auth.jwksUri ?? null) : null;
    if (jwksUri !== null) await this.outbound.assertUrlAllowed(jwksUri);
    const id = randomUUID();
    const clientId = generateClientId();
    const clientSecret = auth.method === 'client_secret_basic' ? generateClientSecret() : undefined;
    return this.db.transaction(async (m) => {
      const row = await this.connectors.insert(m, {
        id,
        tenantId,
        clientId,
        name: input.name,
        owner: input.owner ?? null,
        delegation: input.delegation,
        authMethod: auth.method,
        secretHash: clientSecret === undefined ? null : hashKey(clientSecret),
        jwks,
        jwksUri,
        allowedProviders: policy.allowedProviders,
        allowedScopes: policy.allowedScopes,
      });
      await this.audit.record(
        {
          tenantId,
          action: 'connector.created',
          outcome: 'allowed',
          actor,
          details: {
            connectorId: id,
            clientId,
            name: row.name,
            owner: row.owner,
            delegation: row.delegation,
            allowedProviders: row.allowed_providers,
            allowedScopes: row.allowed_scopes,
            auth: authSummary(row),
          },
        },
        m,
      );
      const created = view(row);
      return clientSecret === undefined ? created : { ...created, clientSecret };
    });
  }

  async listConnectors(tenantId: string): Promise<ConnectorView[]> {
    const rows = await this.connectors.listForTenant(tenantId);
    return rows.map(view);
  }

  async getConnector(tenantId: string, connectorId: string): Promise<ConnectorView> {
    const row = await this.connectors.find(tenantId, connectorId);
    if (!row) throw new CommonException('not_found', 'Connector not found');
    return view(row);
  }

  /** Changes a connector's name, owner, policy or state; `disabled: true` stops it at once. */
  async updateConnector(
    actor: Actor,
    tenantId: string,
    connectorId: string,
    patch: UpdateConnectorInput,
  ): Promise<ConnectorView> {
    return this.db.transaction(async (m) => {
      const before = await this.connectors.lock(m, tenantId, connectorId);
      if (!before) throw new CommonException('not_found', 'Connector not found');
      const policy =
        patch.allowedProviders !== undefined || patch.allowedScopes !== undefined
          ? await this.checkPolicy(
              tenantId,
              patch.allowedProviders ?? before.allowed_providers,
              patch.allowedScopes ?? before.allowed_scopes,
              m,
            )
          : { allowedProviders: before.allowed_providers, allowedScopes: before.allowed_scopes };
      const after = await this.connectors.update(m, tenantId, connectorId, {
        name: patch.name ?? before.name,
        owner: patch.owner === undefined ? before.owner : patch.owner,
        delegation: patch.delegation ?? before.delegation,
        allowedProviders: policy.allowedProviders,
        allowedScopes: policy.allowedScopes,
        disabled: patch.disabled ?? null,
      });
      const disabling = before.disabled_at === null && after.disabled_at !== null;
      await this.audit.record(
        {
          tenantId,
          action: disabling ? 'connector.disabled' : 'connector.updated',
          outcome: 'allowed',
          actor,
          details: {
            connectorId,
            clientId: after.client_id,
            changed: Object.keys(patch).sort(),
            ...patch,
            ...(patch.allowedProviders !== undefined || patch.allowedScopes !== undefined ? policy : {}),
          },
        },
        m,
      );
      return view(after);
    });
  }

  /** Removes a connector for good; its audit trail stays. */
  async deleteConnector(actor: Actor, tenantId: string, connectorId: string): Promise<void> {
    await this.db.transaction(async (m) => {
      const row = await this.connectors.delete(m, tenantId, connectorId);
      if (!row) throw new CommonException('not_found', 'Connector not found');
      await this.audit.record(
        {
          tenantId,
          action: 'connector.deleted',
          outcome: 'allowed',
          actor,
          details: { connectorId, clientId: row.client_id, name: row.name },
        },
        m,
      );
    });
  }

  /** Issues a new client secret; the old one stops working when this commits. */
  async rotateClientSecret(
    actor: Actor,
    tenantId: string,
    connectorId: string,
  ): Promise<{ clientSecret: string }> {
    const clientSecret = generateClientSecret();
    await this.db.transaction(async (m) => {
      const row = await this.connectors.lock(m, tenantId, connectorId);
      if (!row) throw new CommonException('not_found', 'Connector not found');
      if (row.auth_method !== 'client_secret_basic') {
        throw new CommonException(
          'invalid_request',
          `This connector authenticates with ${row.auth_method}; it has no client secret`,
        );
      }
      await this.connectors.setSecretHash(m, tenantId, connectorId, hashKey(clientSecret));
      await this.audit.record(
        {
          tenantId,
          action: 'connector.secret_rotated',
          outcome: 'allowed',
          actor,
          details: { connectorId, clientId: row.client_id },
        },
        m,
      );
    });
    return { clientSecret };
  }

  /** A connector by client_id, disabled or not, with its secret hash and version; null when unknown. */
  async credentialsByClientId(clientId: string): Promise<ConnectorCredentials | null> {
    if (!CLIENT_ID.test(clientId)) return null;
    const row = await this.connectors.findByClientId(clientId);
    if (!row) return null;
    return {
      ...principal(row),
      jwks: row.jwks,
      jwksUri: row.jwks_uri,
      secretHash: row.secret_hash,
      version: row.version,
      disabled: row.disabled_at !== null,
    };
  }

  /**
   * Every allowed provider must be one the tenant has (built-in or its own custom provider), scopes may only
   * narrow allowed providers, and only OAuth providers have scopes. Returns the policy with duplicates removed.
   */
  private async checkPolicy(
    tenantId: string,
    providers: string[],
    scopes: Record<string, string[]>,
    manager?: EntityManager,
  ): Promise<{ allowedProviders: string[]; allowedScopes: Record<string, string[]> }> {
    const allowedProviders = unique(providers);
    const definitions = new Map<string, ProviderDefinition>();
    for (const key of allowedProviders) {
      // Fresh: a provider saved a moment ago through another Custos process must count.
      const definition = await this.providers.get(tenantId, key, { fresh: true, manager });
      if (!definition)
        throw new CommonException('validation_failed', `allowedProviders names unknown provider "${key}"`, {
          provider: key,
        });
      definitions.set(key, definition);
    }
    const allowedScopes: Record<string, string[]> = {};
    for (const [key, list] of Object.entries(scopes)) {
      if (!allowedProviders.includes(key)) {
        throw new CommonException(
          'validation_failed',
          `allowedScopes names provider "${key}", which is not in allowedProviders`,
          { provider: key },
        );
      }
      if (definitions.get(key)?.authMode !== 'oauth2') {
        throw new CommonException(
          'validation_failed',
          `allowedScopes names provider "${key}", which does not use OAuth scopes`,
          { provider: key },
        );
      }
      allowedScopes[key] = unique(list);
    }
    return { allowedProviders, allowedScopes };
  }
}
