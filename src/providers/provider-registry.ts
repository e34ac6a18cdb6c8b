/**
 * The providers a tenant has: the built-in catalog first, then the tenant's custom providers. Catalog hits
 * never touch I/O (the token endpoint looks a provider up on every request); custom definitions are read
 * per tenant, all at once, and kept for a short while, and this process forgets a tenant's copy when one of
 * them is saved or deleted. Other processes see a change within CUSTOM_CACHE_MS; admin writes that must see
 * it at once ask with `fresh`.
 */
import { Inject, Injectable } from '@nestjs/common';
import { LRUCache } from 'lru-cache';
import type { EntityManager } from 'typeorm';
import { ProviderCatalog } from './provider-catalog.js';
import type { ProviderDefinition } from './provider-definition.js';
import { TenantProvidersRepository } from './tenant-providers.repository.js';

const CUSTOM_CACHE_MS = 30_000;
/** Tenants whose custom providers are kept at once; the least recently used go first. */
const CUSTOM_CACHE_MAX_TENANTS = 10_000;

export interface RegisteredProvider {
  definition: ProviderDefinition;
  custom: boolean;
}

interface TenantEntry {
  loading: Promise<ReadonlyMap<string, ProviderDefinition>>;
  /** Set once loaded; until then lookups wait for `loading`. */
  loaded?: ReadonlyMap<string, ProviderDefinition>;
}

function deepFreeze<T>(value: T): T {
  if (typeof value === 'object' && value !== null && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const child of Object.values(value)) deepFreeze(child);
  }
  return value;
}

@Injectable()
export class ProviderRegistry {
  /**
   * An entry is stored without an age while it loads and gets CUSTOM_CACHE_MS once loaded, so a slow read
   * does not eat into the time its result is used. `ttlResolution: 0` reads the clock on each lookup instead
   * of arming a timer to cache it.
   */
  private readonly custom = new LRUCache<string, TenantEntry>({
    max: CUSTOM_CACHE_MAX_TENANTS,
    ttl: CUSTOM_CACHE_MS,
    ttlResolution: 0,
  });

  constructor(
    @Inject(ProviderCatalog) private readonly catalog: ProviderCatalog,
    @Inject(TenantProvidersRepository) private readonly rows: TenantProvidersRepository,
  ) {}

  /** True for a catalog key: such a key always means the built-in provider, never a custom one. */
  isBuiltIn(key: string): boolean {
    return this.catalog.get(key) !== undefined;
  }

  /**
   * Without I/O: the catalog entry, or the tenant's custom definition when it is cached. `undefined` means
   * "not known without asking": follow with `get`.
   */
  getCached(tenantId: string, key: string): ProviderDefinition | undefined {
    const builtIn = this.catalog.get(key);
    if (builtIn !== undefined) return builtIn;
    return this.custom.get(tenantId)?.loaded?.get(key);
  }

  /**
   * The provider this tenant means by `key`, or undefined. `fresh` reads the tenant's custom provider from
   * the database instead of the cache (for admin writes that must see a save made by another process),
   * through `manager` when the caller is inside a transaction.
   */
  async get(
    tenantId: string,
    key: string,
    options: { fresh?: boolean; manager?: EntityManager } = {},
  ): Promise<ProviderDefinition | undefined> {
    const builtIn = this.catalog.get(key);
    if (builtIn !== undefined) return builtIn;
    if (options.fresh === true) {
      return this.readCustom(options.manager, tenantId, key, false);
    }
    return (await this.customOf(tenantId)).get(key);
  }

  /** The catalog and the tenant's custom providers, sorted by key; a catalog key shadows a custom one. */
  async list(tenantId: string): Promise<RegisteredProvider[]> {
    const custom = await this.customOf(tenantId);
    const all: RegisteredProvider[] = this.catalog
      .list()
      .map((definition) => ({ definition, custom: false }));
    for (const definition of custom.values()) {
      if (!this.isBuiltIn(definition.key)) all.push({ definition, custom: true });
    }
    return all.sort((a, b) =>
      a.definition.key < b.definition.key ? -1 : a.definition.key > b.definition.key ? 1 : 0,
    );
  }

  /** Forgets this process's copy of the tenant's custom providers (after a save or delete commits). */
  invalidate(tenantId: string): void {
    this.custom.delete(tenantId);
  }

  /**
   * Inside a transaction that is about to create or replace a connection: the tenant's custom provider
   * `key`, read and share-locked until commit, so it cannot be deleted (or change its auth mode) under the
   * new connection; undefined when it does not exist.
   */
  async lockCustom(m: EntityManager, tenantId: string, key: string): Promise<ProviderDefinition | undefined> {
    return this.readCustom(m, tenantId, key, true);
  }

  private async readCustom(
    m: EntityManager | undefined,
    tenantId: string,
    key: string,
    lock: boolean,
  ): Promise<ProviderDefinition | undefined> {
    const definition = await this.rows.definition(m, tenantId, key, lock);
    return definition && deepFreeze(definition);
  }

  private customOf(tenantId: string): Promise<ReadonlyMap<string, ProviderDefinition>> {
    const current = this.custom.get(tenantId);
    if (current !== undefined) return current.loading;
    const entry: TenantEntry = { loading: this.load(tenantId) };
    this.custom.set(tenantId, entry, { ttl: 0 });
    entry.loading.then(
      (loaded) => {
        // Stored only if nothing invalidated the tenant meanwhile; a newer load then owns the slot.
        if (this.custom.peek(tenantId) === entry) {
          entry.loaded = loaded;
          this.custom.set(tenantId, entry);
        }
      },
      () => {
        // A failed read is not cached: the next lookup tries again.
        if (this.custom.peek(tenantId) === entry) this.custom.delete(tenantId);
      },
    );
    return entry.loading;
  }

  private async load(tenantId: string): Promise<ReadonlyMap<string, ProviderDefinition>> {
    const rows = await this.rows.definitions(tenantId);
    return new Map(rows.map((r) => [r.key, deepFreeze(r.definition)]));
  }
}
