/**
 * Custom providers: a tenant admin defines providers for in-house systems with the catalog's schema. Every
 * URL passes the SSRF-safe client's check when saved (http: only for allow-listed hosts); a catalog key
 * cannot be taken; a provider that live connections use cannot be deleted or change its auth mode. Every
 * change commits with its audit event, which names the key and the URLs' hosts, never header values.
 */
import { randomUUID } from 'node:crypto';
import { Inject, Injectable } from '@nestjs/common';
import { DataSource, type EntityManager } from 'typeorm';
import { AuditService, type Actor } from '../audit/audit.service.js';
import { returned } from '../database/sql.js';
import { CustosException } from '../common/errors.js';
import { OutboundHttpClient } from '../common/outbound-http.js';
import { ProviderCatalog, publicProviderView, type PublicProviderView } from './provider-catalog.js';
import {
  definitionUrls,
  parseCustomProviderDefinition,
  urlPlaceholders,
  type ProviderDefinition,
} from './provider-definition.js';
import { ProviderRegistry } from './provider-registry.js';

/** One provider as the tenant has it: a built-in one, or a custom one with its version and dates. */
export interface TenantProviderView {
  key: string;
  custom: boolean;
  definition: ProviderDefinition;
  version?: number;
  createdAt?: string;
  updatedAt?: string;
}

/** A list entry: what `GET /v1/providers` shows, marked built-in or custom. */
export type TenantProviderSummary = PublicProviderView & {
  custom: boolean;
  version?: number;
  updatedAt?: string;
};

interface TenantProviderRow {
  id: string;
  key: string;
  definition: ProviderDefinition;
  version: number;
  created_at: Date;
  updated_at: Date;
}

const columns = 'id, key, definition, version, created_at, updated_at';

function customView(r: TenantProviderRow): TenantProviderView {
  return {
    key: r.key,
    custom: true,
    definition: r.definition,
    version: r.version,
    createdAt: r.created_at.toISOString(),
    updatedAt: r.updated_at.toISOString(),
  };
}

/** The distinct hosts (host[:port], placeholders kept) of a definition's URLs, for audit details. */
export function definitionHosts(def: ProviderDefinition): string[] {
  const hosts = definitionUrls(def).map(({ url }) => /^[a-z]+:\/\/([^/?#]*)/i.exec(url)?.[1] ?? '');
  return [...new Set(hosts.filter((h) => h !== ''))].sort();
}

/**
 * The URL to check at save time for a (possibly templated) URL: a host with placeholders is judged by its
 * fixed domain (the concrete host is only known at connect time, and is checked again on every request);
 * path placeholders get a dummy value.
 */
function urlToCheck(url: string): { url: string; templatedHost: boolean } {
  const m = /^([a-z]+:\/\/)([^/?#]*)(.*)$/is.exec(url);
  if (m === null || urlPlaceholders(url).length === 0) return { url, templatedHost: false };
  const [, scheme, host, rest] = m as unknown as [string, string, string, string];
  const templatedHost = host.includes('{');
  // The schema guarantees a templated host ends in '}.' + a fixed domain of at least two labels.
  const checkedHost = templatedHost ? host.slice(host.lastIndexOf('}') + 2) : host;
  return { url: `${scheme}${checkedHost}${rest.replace(/\{[^{}]*\}/g, 'x')}`, templatedHost };
}

@Injectable()
export class TenantProvidersService {
  constructor(
    @Inject(DataSource) private readonly db: DataSource,
    @Inject(AuditService) private readonly audit: AuditService,
    @Inject(ProviderCatalog) private readonly catalog: ProviderCatalog,
    @Inject(ProviderRegistry) private readonly registry: ProviderRegistry,
    @Inject(OutboundHttpClient) private readonly outbound: OutboundHttpClient,
  ) {}

  /** Creates or replaces the tenant's custom provider `key` from a full definition. */
  async saveCustomProvider(
    actor: Actor,
    tenantId: string,
    key: string,
    body: unknown,
  ): Promise<{ provider: TenantProviderView; created: boolean }> {
    this.refuseBuiltIn(key);
    const definition = parseCustomProviderDefinition(body);
    if (definition.key !== key) {
      throw new CustosException(
        'validation_failed',
        `Invalid provider definition at key: must equal the key in the path ("${key}")`,
        { issues: [{ path: 'key', message: 'must equal the key in the path' }] },
      );
    }
    await this.checkUrls(definition);
    const result = await this.db.transaction(async (m) => {
      const current: { auth_mode: string }[] = await m.query(
        `SELECT definition->>'authMode' AS auth_mode FROM tenant_providers WHERE tenant_id = $1 AND key = $2
         FOR UPDATE`,
        [tenantId, key],
      );
      const before = current[0];
      if (before !== undefined && before.auth_mode !== definition.authMode) {
        const live = await this.liveConnections(m, tenantId, key);
        if (live > 0) {
          throw new CustosException(
            'conflict',
            `Provider "${key}" has ${live} live connection(s) of auth mode ${before.auth_mode}; revoke them before changing it`,
            { liveConnections: live },
          );
        }
      }
      // xmax is 0 only on a freshly inserted row: it tells an insert from an update of the same statement.
      const rows: (TenantProviderRow & { created: boolean })[] = await m.query(
        `INSERT INTO tenant_providers (id, tenant_id, key, definition, version)
         VALUES ($1, $2, $3, $4, 1)
         ON CONFLICT (tenant_id, key) DO UPDATE SET definition = EXCLUDED.definition,
           version = tenant_providers.version + 1, updated_at = now()
         RETURNING ${columns}, (xmax = 0) AS created`,
        [randomUUID(), tenantId, key, JSON.stringify(definition)],
      );
      const row = rows[0];
      await this.audit.record(
        {
          tenantId,
          action: 'provider.saved',
          outcome: 'allowed',
          actor,
          provider: key,
          details: {
            key,
            created: row.created,
            version: row.version,
            name: definition.name,
            authMode: definition.authMode,
            hosts: definitionHosts(definition),
          },
        },
        m,
      );
      return { provider: customView(row), created: row.created };
    });
    this.registry.invalidate(tenantId);
    return result;
  }

  /** A built-in provider, or the tenant's custom one; 404 for neither. */
  async getProvider(tenantId: string, key: string): Promise<TenantProviderView> {
    const builtIn = this.catalog.get(key);
    if (builtIn !== undefined) return { key, custom: false, definition: builtIn };
    const rows: TenantProviderRow[] = await this.db.query(
      `SELECT ${columns} FROM tenant_providers WHERE tenant_id = $1 AND key = $2`,
      [tenantId, key],
    );
    if (rows.length === 0) throw new CustosException('not_found', 'Provider not found');
    return customView(rows[0]);
  }

  /** The catalog merged with the tenant's custom providers (read fresh), sorted by key. */
  async listProviders(tenantId: string): Promise<TenantProviderSummary[]> {
    const rows: TenantProviderRow[] = await this.db.query(
      `SELECT ${columns} FROM tenant_providers WHERE tenant_id = $1`,
      [tenantId],
    );
    const items: TenantProviderSummary[] = this.catalog
      .list()
      .map((def) => ({ ...publicProviderView(def), custom: false }));
    for (const r of rows) {
      // A key the catalog gained after the tenant took it: the built-in provider wins everywhere.
      if (this.catalog.get(r.key) !== undefined) continue;
      items.push({
        ...publicProviderView(r.definition),
        custom: true,
        version: r.version,
        updatedAt: r.updated_at.toISOString(),
      });
    }
    return items.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  }

  /** Deletes the tenant's custom provider; refused while a live (non-revoked) connection uses it. */
  async deleteCustomProvider(actor: Actor, tenantId: string, key: string): Promise<void> {
    this.refuseBuiltIn(key);
    await this.db.transaction(async (m) => {
      // The row lock waits for any import holding it (ProviderRegistry.lockCustom), so the count below sees
      // every connection committed under this provider.
      const current: TenantProviderRow[] = await m.query(
        `SELECT ${columns} FROM tenant_providers WHERE tenant_id = $1 AND key = $2 FOR UPDATE`,
        [tenantId, key],
      );
      const row = current[0];
      if (!row) throw new CustosException('not_found', 'Provider not found');
      const live = await this.liveConnections(m, tenantId, key);
      if (live > 0) {
        throw new CustosException(
          'conflict',
          `Provider "${key}" has ${live} live connection(s); revoke them before deleting it`,
          { liveConnections: live },
        );
      }
      await m.query('DELETE FROM tenant_providers WHERE id = $1', [row.id]);
      const leftovers = await this.removeReferences(m, tenantId, key);
      await this.audit.record(
        {
          tenantId,
          action: 'provider.deleted',
          outcome: 'allowed',
          actor,
          provider: key,
          details: { key, version: row.version, hosts: definitionHosts(row.definition), ...leftovers },
        },
        m,
      );
    });
    this.registry.invalidate(tenantId);
  }

  private refuseBuiltIn(key: string): void {
    if (this.catalog.get(key) !== undefined) {
      throw new CustosException(
        'conflict',
        `"${key}" is a built-in provider; a custom provider needs another key`,
      );
    }
  }

  /**
   * Everything that named a deleted custom provider goes with it, so that a provider created later under
   * the same key (perhaps at another host) inherits nothing: the OAuth app and its sealed client secret,
   * connectors' permission to use it, open connect links, and queued revocations (whose sealed tokens could
   * only ever be sent to the deleted provider's endpoints).
   */
  private async removeReferences(
    m: EntityManager,
    tenantId: string,
    key: string,
  ): Promise<{
    appDeleted: boolean;
    connectorsUpdated: number;
    sessionsClosed: number;
    revocationsDropped: number;
  }> {
    const apps = returned<{ id: string }>(
      await m.query('DELETE FROM provider_apps WHERE tenant_id = $1 AND provider = $2 RETURNING id', [
        tenantId,
        key,
      ]),
    );
    // A version bump makes the token endpoint re-read each connector on its next request.
    const connectors = returned<{ id: string }>(
      await m.query(
        `UPDATE connectors
            SET allowed_providers = array_remove(allowed_providers, $2), allowed_scopes = allowed_scopes - $2,
                version = version + 1, updated_at = now()
          WHERE tenant_id = $1 AND ($2 = ANY (allowed_providers) OR allowed_scopes ? $2)
          RETURNING id`,
        [tenantId, key],
      ),
    );
    const sessions = returned<{ id: string }>(
      await m.query(
        `UPDATE connect_sessions
            SET status = 'failed', flow_secrets = NULL, login_secrets = NULL, state_hash = NULL,
                login_state_hash = NULL
          WHERE tenant_id = $1 AND provider = $2 AND status = 'pending'
          RETURNING id`,
        [tenantId, key],
      ),
    );
    const revocations = returned<{ id: string }>(
      await m.query('DELETE FROM pending_revocations WHERE tenant_id = $1 AND provider = $2 RETURNING id', [
        tenantId,
        key,
      ]),
    );
    return {
      appDeleted: apps.length > 0,
      connectorsUpdated: connectors.length,
      sessionsClosed: sessions.length,
      revocationsDropped: revocations.length,
    };
  }

  private async liveConnections(m: EntityManager, tenantId: string, key: string): Promise<number> {
    const rows: { n: number }[] = await m.query(
      `SELECT count(*)::int AS n FROM connections WHERE tenant_id = $1 AND provider = $2 AND revoked_at IS NULL`,
      [tenantId, key],
    );
    return rows[0]?.n ?? 0;
  }

  /** Every URL through the SSRF-safe client's save-time check, refusals naming the field. */
  private async checkUrls(def: ProviderDefinition): Promise<void> {
    const checked = new Set<string>();
    for (const { path, url } of definitionUrls(def)) {
      const target = urlToCheck(url);
      if (checked.has(target.url)) continue;
      checked.add(target.url);
      try {
        await this.outbound.assertUrlAllowed(target.url);
      } catch (err) {
        if (!(err instanceof CustosException)) throw err;
        // The fixed domain under a templated host need not resolve itself; its subdomains are checked on use.
        if (target.templatedHost && err.details?.reason === 'dns_resolution_failed') continue;
        const named = new CustosException(err.code, `${path}: ${err.message}`, { ...err.details, path });
        // Kept for server-side logs only, as the client does.
        if (err.cause !== undefined) named.cause = err.cause;
        throw named;
      }
    }
  }
}
