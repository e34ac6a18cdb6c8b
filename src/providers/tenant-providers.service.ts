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
import { CommonException } from '../common/errors.js';
import { OutboundHttpClient } from '../common/outbound-http.js';
import { ProviderCatalog, publicProviderView, type PublicProviderView } from './provider-catalog.js';
import {
  definitionUrls,
  parseCustomProviderDefinition,
  urlPlaceholders,
  type ProviderDefinition,
} from './provider-definition.js';
import { ProviderAppsRepository } from './provider-apps.repository.js';
import { ProviderRegistry } from './provider-registry.js';
import type { ProviderUsage } from './provider-usage.js';
import { TenantProvidersRepository, type TenantProviderRow } from './tenant-providers.repository.js';

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
  /** Who else keeps records under a custom provider's key (see provider-usage.ts for why this is inverted). */
  private readonly usages: ProviderUsage[] = [];

  constructor(
    @Inject(DataSource) private readonly db: DataSource,
    @Inject(TenantProvidersRepository) private readonly rows: TenantProvidersRepository,
    @Inject(ProviderAppsRepository) private readonly apps: ProviderAppsRepository,
    @Inject(AuditService) private readonly audit: AuditService,
    @Inject(ProviderCatalog) private readonly catalog: ProviderCatalog,
    @Inject(ProviderRegistry) private readonly registry: ProviderRegistry,
    @Inject(OutboundHttpClient) private readonly outbound: OutboundHttpClient,
  ) {}

  /**
   * Registers a domain that keeps records under custom providers' keys (connections/ does, at start-up): its
   * live records block a delete or an auth-mode change, and a delete makes it forget the rest.
   */
  registerUsage(usage: ProviderUsage): void {
    this.usages.push(usage);
  }

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
      throw new CommonException(
        'validation_failed',
        `Invalid provider definition at key: must equal the key in the path ("${key}")`,
        { issues: [{ path: 'key', message: 'must equal the key in the path' }] },
      );
    }
    await this.checkUrls(definition);
    const result = await this.db.transaction(async (m) => {
      const authMode = await this.rows.lockAuthMode(m, tenantId, key);
      if (authMode !== undefined && authMode !== definition.authMode) {
        const live = await this.liveConnections(m, tenantId, key);
        if (live > 0) {
          throw new CommonException(
            'conflict',
            `Provider "${key}" has ${live} live connection(s) of auth mode ${authMode}; revoke them before changing it`,
            { liveConnections: live },
          );
        }
      }
      const row = await this.rows.upsert(m, randomUUID(), tenantId, key, definition);
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
    const row = await this.rows.find(tenantId, key);
    if (!row) throw new CommonException('not_found', 'Provider not found');
    return customView(row);
  }

  /** The catalog merged with the tenant's custom providers (read fresh), sorted by key. */
  async listProviders(tenantId: string): Promise<TenantProviderSummary[]> {
    const rows = await this.rows.listForTenant(tenantId);
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
      const row = await this.rows.lock(m, tenantId, key);
      if (!row) throw new CommonException('not_found', 'Provider not found');
      const live = await this.liveConnections(m, tenantId, key);
      if (live > 0) {
        throw new CommonException(
          'conflict',
          `Provider "${key}" has ${live} live connection(s); revoke them before deleting it`,
          { liveConnections: live },
        );
      }
      await this.rows.deleteById(m, row.id);
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
      throw new CommonException(
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
  ): Promise<Record<string, number | boolean>> {
    const leftovers: Record<string, number | boolean> = {
      appDeleted: await this.apps.deleteForProvider(m, tenantId, key),
    };
    for (const usage of this.usages) Object.assign(leftovers, await usage.forget(m, tenantId, key));
    return leftovers;
  }

  /** Live records under the provider, over every registered usage (one statement each, in `m`). */
  private async liveConnections(m: EntityManager, tenantId: string, key: string): Promise<number> {
    let live = 0;
    for (const usage of this.usages) live += (await usage.liveConnections?.(m, tenantId, key)) ?? 0;
    return live;
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
        if (!(err instanceof CommonException)) throw err;
        // The fixed domain under a templated host need not resolve itself; its subdomains are checked on use.
        if (target.templatedHost && err.details?.reason === 'dns_resolution_failed') continue;
        const named = new CommonException(err.code, `${path}: ${err.message}`, { ...err.details, path });
        // Kept for server-side logs only, as the client does.
        if (err.cause !== undefined) named.cause = err.cause;
        throw named;
      }
    }
  }
}
