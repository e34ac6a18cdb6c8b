/**
 * The connector registry: tenant admins register, change, disable and delete connectors; client
 * authentication (identity/client-auth.ts) looks them up. A client secret is shown once and stored only as its
 * SHA-256; every change commits together with its audit event.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { Inject, Injectable } from '@nestjs/common';
import { DataSource, type EntityManager } from 'typeorm';
import { AuditService, type Actor } from '../audit/audit.service.js';
import { CustosException } from '../common/errors.js';
import { OutboundHttpClient } from '../common/outbound-http.js';
import { returned } from '../database/sql.js';
import type { ProviderDefinition } from '../providers/provider-definition.js';
import { ProviderRegistry } from '../providers/provider-registry.js';
import { hashKey } from './admin-keys.service.js';
import type { ConnectorAuthMethod, ConnectorDelegation } from './connector.entity.js';
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

interface ConnectorRow {
  id: string;
  tenant_id: string;
  client_id: string;
  name: string;
  owner: string | null;
  delegation: ConnectorDelegation;
  auth_method: ConnectorAuthMethod;
  jwks: PublicJwks | null;
  jwks_uri: string | null;
  allowed_providers: string[];
  allowed_scopes: Record<string, string[]>;
  version: number;
  disabled_at: Date | null;
  created_at: Date;
  updated_at: Date;
}

const columns = `id, tenant_id, client_id, name, owner, delegation, auth_method, jwks, jwks_uri, allowed_providers,
  allowed_scopes, version, disabled_at, created_at, updated_at`;

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
      const rows: ConnectorRow[] = await m.query(
        `INSERT INTO connectors (id, tenant_id, client_id, name, owner, delegation, auth_method, secret_hash, jwks,
           jwks_uri, allowed_providers, allowed_scopes, version)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, 1) RETURNING ${columns}`,
        [
          id,
          tenantId,
          clientId,
          input.name,
          input.owner ?? null,
          input.delegation,
          auth.method,
          clientSecret === undefined ? null : hashKey(clientSecret),
          jwks === null ? null : JSON.stringify(jwks),
          jwksUri,
          policy.allowedProviders,
          JSON.stringify(policy.allowedScopes),
        ],
      );
      const row = rows[0];
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
    const rows: ConnectorRow[] = await this.db.query(
      `SELECT ${columns} FROM connectors WHERE tenant_id = $1 ORDER BY created_at, id`,
      [tenantId],
    );
    return rows.map(view);
  }

  async getConnector(tenantId: string, connectorId: string): Promise<ConnectorView> {
    const rows: ConnectorRow[] = await this.db.query(
      `SELECT ${columns} FROM connectors WHERE id = $1 AND tenant_id = $2`,
      [connectorId, tenantId],
    );
    if (rows.length === 0) throw new CustosException('not_found', 'Connector not found');
    return view(rows[0]);
  }

  /** Changes a connector's name, owner, policy or state; `disabled: true` stops it at once. */
  async updateConnector(
    actor: Actor,
    tenantId: string,
    connectorId: string,
    patch: UpdateConnectorInput,
  ): Promise<ConnectorView> {
    return this.db.transaction(async (m) => {
      const current: ConnectorRow[] = await m.query(
        `SELECT ${columns} FROM connectors WHERE id = $1 AND tenant_id = $2 FOR UPDATE`,
        [connectorId, tenantId],
      );
      const before = current[0];
      if (!before) throw new CustosException('not_found', 'Connector not found');
      const policy =
        patch.allowedProviders !== undefined || patch.allowedScopes !== undefined
          ? await this.checkPolicy(
              tenantId,
              patch.allowedProviders ?? before.allowed_providers,
              patch.allowedScopes ?? before.allowed_scopes,
              m,
            )
          : { allowedProviders: before.allowed_providers, allowedScopes: before.allowed_scopes };
      const rows = returned<ConnectorRow>(
        await m.query(
          `UPDATE connectors SET name = $3, owner = $4, delegation = $5, allowed_providers = $6, allowed_scopes = $7,
             disabled_at = CASE WHEN $8::boolean IS NULL THEN disabled_at
                                WHEN $8::boolean THEN COALESCE(disabled_at, now()) ELSE NULL END,
             version = version + 1, updated_at = now()
           WHERE id = $1 AND tenant_id = $2 RETURNING ${columns}`,
          [
            connectorId,
            tenantId,
            patch.name ?? before.name,
            patch.owner === undefined ? before.owner : patch.owner,
            patch.delegation ?? before.delegation,
            policy.allowedProviders,
            JSON.stringify(policy.allowedScopes),
            patch.disabled ?? null,
          ],
        ),
      );
      const after = rows[0];
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
      const rows = returned<ConnectorRow>(
        await m.query(`DELETE FROM connectors WHERE id = $1 AND tenant_id = $2 RETURNING ${columns}`, [
          connectorId,
          tenantId,
        ]),
      );
      const row = rows[0];
      if (!row) throw new CustosException('not_found', 'Connector not found');
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
      const current: ConnectorRow[] = await m.query(
        `SELECT ${columns} FROM connectors WHERE id = $1 AND tenant_id = $2 FOR UPDATE`,
        [connectorId, tenantId],
      );
      const row = current[0];
      if (!row) throw new CustosException('not_found', 'Connector not found');
      if (row.auth_method !== 'client_secret_basic') {
        throw new CustosException(
          'invalid_request',
          `This connector authenticates with ${row.auth_method}; it has no client secret`,
        );
      }
      await m.query(
        `UPDATE connectors SET secret_hash = $3, version = version + 1, updated_at = now()
          WHERE id = $1 AND tenant_id = $2`,
        [connectorId, tenantId, hashKey(clientSecret)],
      );
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
    const rows: (ConnectorRow & { secret_hash: Buffer | null })[] = await this.db.query(
      `SELECT ${columns}, secret_hash FROM connectors WHERE client_id = $1`,
      [clientId],
    );
    const row = rows[0];
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
        throw new CustosException('validation_failed', `allowedProviders names unknown provider "${key}"`, {
          provider: key,
        });
      definitions.set(key, definition);
    }
    const allowedScopes: Record<string, string[]> = {};
    for (const [key, list] of Object.entries(scopes)) {
      if (!allowedProviders.includes(key)) {
        throw new CustosException(
          'validation_failed',
          `allowedScopes names provider "${key}", which is not in allowedProviders`,
          { provider: key },
        );
      }
      if (definitions.get(key)?.authMode !== 'oauth2') {
        throw new CustosException(
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
