/**
 * Every statement on the connectors table outside the token endpoint's decision read
 * (connections/decision-query.ts, one statement over several tables): the admin API's create, read, change,
 * delete and secret rotation, client authentication's lookup by client_id (which reads whether the tenant is
 * being deleted), a deleted custom provider's removal from every connector's policy, and a deleted tenant's
 * connectors' version bump. Only a client secret's SHA-256 is stored; JSON columns are written from typed values here.
 */
import { Inject, Injectable } from '@nestjs/common';
import { DataSource, type EntityManager } from 'typeorm';
import { returned } from '../database/sql.js';
import type { ConnectorAuthMethod, ConnectorDelegation } from './connector.entity.js';
import type { PublicJwks } from './jwk.js';

/** A connector as the admin API and client authentication see it (no secret hash). */
export interface ConnectorRow {
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

/** A ConnectorRow with its client secret's hash (null unless it authenticates with client_secret_basic). */
export type ConnectorWithSecretRow = ConnectorRow & { secret_hash: Buffer | null };

/** The columns of a ConnectorRow. */
const columns = `id, tenant_id, client_id, name, owner, delegation, auth_method, jwks, jwks_uri, allowed_providers,
  allowed_scopes, version, disabled_at, created_at, updated_at`;

/** What registering a connector writes, its client secret already hashed. */
export interface NewConnector {
  id: string;
  tenantId: string;
  clientId: string;
  name: string;
  owner: string | null;
  delegation: ConnectorDelegation;
  authMethod: ConnectorAuthMethod;
  secretHash: Buffer | null;
  jwks: PublicJwks | null;
  jwksUri: string | null;
  allowedProviders: string[];
  allowedScopes: Record<string, string[]>;
}

/** A connector's new settings; `disabled` null leaves its state as it is. */
export interface ConnectorChanges {
  name: string;
  owner: string | null;
  delegation: ConnectorDelegation;
  allowedProviders: string[];
  allowedScopes: Record<string, string[]>;
  disabled: boolean | null;
}

@Injectable()
export class ConnectorsRepository {
  constructor(@Inject(DataSource) private readonly db: DataSource) {}

  /** Registers a connector at version 1. */
  async insert(m: EntityManager, c: NewConnector): Promise<ConnectorRow> {
    const rows: ConnectorRow[] = await m.query(
      `INSERT INTO connectors (id, tenant_id, client_id, name, owner, delegation, auth_method, secret_hash, jwks,
           jwks_uri, allowed_providers, allowed_scopes, version)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, 1) RETURNING ${columns}`,
      [
        c.id,
        c.tenantId,
        c.clientId,
        c.name,
        c.owner,
        c.delegation,
        c.authMethod,
        c.secretHash,
        c.jwks === null ? null : JSON.stringify(c.jwks),
        c.jwksUri,
        c.allowedProviders,
        JSON.stringify(c.allowedScopes),
      ],
    );
    return rows[0];
  }

  /** The tenant's connectors, oldest first. */
  listForTenant(tenantId: string): Promise<ConnectorRow[]> {
    return this.db.query(`SELECT ${columns} FROM connectors WHERE tenant_id = $1 ORDER BY created_at, id`, [
      tenantId,
    ]);
  }

  /** One of the tenant's connectors. */
  async find(tenantId: string, connectorId: string): Promise<ConnectorRow | undefined> {
    const rows: ConnectorRow[] = await this.db.query(
      `SELECT ${columns} FROM connectors WHERE id = $1 AND tenant_id = $2`,
      [connectorId, tenantId],
    );
    return rows[0];
  }

  /** One of the tenant's connectors, locked until the caller's transaction ends. */
  async lock(m: EntityManager, tenantId: string, connectorId: string): Promise<ConnectorRow | undefined> {
    const rows: ConnectorRow[] = await m.query(
      `SELECT ${columns} FROM connectors WHERE id = $1 AND tenant_id = $2 FOR UPDATE`,
      [connectorId, tenantId],
    );
    return rows[0];
  }

  /** Writes new settings over a connector the caller has locked; disabling keeps the first disabled_at. */
  async update(
    m: EntityManager,
    tenantId: string,
    connectorId: string,
    c: ConnectorChanges,
  ): Promise<ConnectorRow> {
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
          c.name,
          c.owner,
          c.delegation,
          c.allowedProviders,
          JSON.stringify(c.allowedScopes),
          c.disabled,
        ],
      ),
    );
    return rows[0];
  }

  /** Deletes one of the tenant's connectors; returns it, or undefined when there was none. */
  async delete(m: EntityManager, tenantId: string, connectorId: string): Promise<ConnectorRow | undefined> {
    const rows = returned<ConnectorRow>(
      await m.query(`DELETE FROM connectors WHERE id = $1 AND tenant_id = $2 RETURNING ${columns}`, [
        connectorId,
        tenantId,
      ]),
    );
    return rows[0];
  }

  /**
   * Takes a deleted custom provider out of every connector's allowed providers and scopes; returns how many
   * connectors changed. A version bump makes the token endpoint re-read each of them on its next request.
   */
  async removeProvider(m: EntityManager, tenantId: string, provider: string): Promise<number> {
    const rows = returned<{ id: string }>(
      await m.query(
        `UPDATE connectors
            SET allowed_providers = array_remove(allowed_providers, $2), allowed_scopes = allowed_scopes - $2,
                version = version + 1, updated_at = now()
          WHERE tenant_id = $1 AND ($2 = ANY (allowed_providers) OR allowed_scopes ? $2)
          RETURNING id`,
        [tenantId, provider],
      ),
    );
    return rows.length;
  }

  /** Replaces the client secret's hash (the old secret stops working when the caller's transaction commits). */
  async setSecretHash(
    m: EntityManager,
    tenantId: string,
    connectorId: string,
    secretHash: Buffer,
  ): Promise<void> {
    await m.query(
      `UPDATE connectors SET secret_hash = $3, version = version + 1, updated_at = now()
          WHERE id = $1 AND tenant_id = $2`,
      [connectorId, tenantId, secretHash],
    );
  }

  /**
   * A connector by client_id, disabled or not, with its secret hash (client authentication's lookup). A
   * connector of a tenant being deleted is none: refused as an unknown client (one probe of the tenant's row).
   */
  async findByClientId(clientId: string): Promise<ConnectorWithSecretRow | undefined> {
    const rows: ConnectorWithSecretRow[] = await this.db.query(
      `SELECT ${columns}, secret_hash FROM connectors k WHERE client_id = $1
          AND NOT EXISTS (SELECT 1 FROM tenants t WHERE t.id = k.tenant_id AND t.deletion_requested_at IS NOT NULL)`,
      [clientId],
    );
    return rows[0];
  }

  /**
   * Moves the version of every connector of the tenant (being deleted), in the caller's transaction: the token
   * endpoint's decision read sees a registration newer than the one it cached, and authenticates the client
   * again, against the lookup above. Returns how many.
   */
  async supersedeAllOfTenant(m: EntityManager, tenantId: string): Promise<number> {
    const rows = returned<{ id: string }>(
      await m.query(
        'UPDATE connectors SET version = version + 1, updated_at = now() WHERE tenant_id = $1 RETURNING id',
        [tenantId],
      ),
    );
    return rows.length;
  }
}
