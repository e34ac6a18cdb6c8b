/**
 * ProviderRegistry's per-tenant copies of custom providers: one read per tenant however many lookups wait
 * on it, a copy kept 30 s from when its read finished, at most 10 000 tenants with the least recently used
 * going first, and nothing kept from a read that failed or that an invalidation overtook. The database is a
 * stand-in whose reads the test finishes by hand.
 */
import type { DataSource } from 'typeorm';
import type { ProviderCatalog } from '../../../src/providers/provider-catalog.js';
import type { ProviderDefinition } from '../../../src/providers/provider-definition.js';
import { ProviderRegistry } from '../../../src/providers/provider-registry.js';
import { TenantProvidersRepository } from '../../../src/providers/tenant-providers.repository.js';

const CACHE_MS = 30_000;
const MAX_TENANTS = 10_000;

type Rows = { key: string; definition: ProviderDefinition }[];

interface Read {
  tenantId: string;
  finish(name: string): void;
  fail(err: Error): void;
}

let reads: Read[];
/** When false, reads finish at once with the definition "corp of <tenant>". */
let byHand: boolean;
let registry: ProviderRegistry;
/** The clock the cache reads (performance.now). */
let now: number;

const tenant = (i: number) => `00000000-0000-4000-8000-${String(i).padStart(12, '0')}`;
const rows = (name: string): Rows => [
  { key: 'corp', definition: { key: 'corp', name } as ProviderDefinition },
];
const cachedName = (tenantId: string) => registry.getCached(tenantId, 'corp')?.name;

beforeEach(() => {
  reads = [];
  byHand = true;
  now = 1_000_000;
  jest.spyOn(performance, 'now').mockImplementation(() => now);
  const db = {
    query: (_sql: string, [tenantId]: [string]) =>
      new Promise<Rows>((resolve, reject) => {
        reads.push({ tenantId, finish: (name) => resolve(rows(name)), fail: reject });
        if (!byHand) resolve(rows(`corp of ${tenantId}`));
      }),
  } as unknown as DataSource;
  const catalog = { get: () => undefined } as unknown as ProviderCatalog;
  registry = new ProviderRegistry(catalog, new TenantProvidersRepository(db));
});

afterEach(() => {
  jest.restoreAllMocks();
});

describe('ProviderRegistry custom-provider cache', () => {
  it('shares one read among lookups and keeps its result 30 s from when the read finished', async () => {
    const first = registry.get(tenant(1), 'corp');
    const second = registry.get(tenant(1), 'corp');
    expect(cachedName(tenant(1))).toBeUndefined();
    expect(reads).toHaveLength(1);
    // A slow read does not eat into the time its result is kept.
    now += 20_000;
    reads[0].finish('Corp');
    expect((await first)?.name).toBe('Corp');
    expect((await second)?.name).toBe('Corp');
    now += CACHE_MS - 1;
    expect(cachedName(tenant(1))).toBe('Corp');
    now += 2;
    expect(cachedName(tenant(1))).toBeUndefined();
    const again = registry.get(tenant(1), 'corp');
    expect(reads).toHaveLength(2);
    reads[1].finish('Corp again');
    expect((await again)?.name).toBe('Corp again');
  });

  it('keeps nothing from a read that an invalidation overtook', async () => {
    const stale = registry.get(tenant(1), 'corp');
    registry.invalidate(tenant(1));
    const fresh = registry.get(tenant(1), 'corp');
    expect(reads).toHaveLength(2);
    reads[0].finish('Before the save');
    expect((await stale)?.name).toBe('Before the save');
    expect(cachedName(tenant(1))).toBeUndefined();
    reads[1].finish('After the save');
    expect((await fresh)?.name).toBe('After the save');
    expect(cachedName(tenant(1))).toBe('After the save');
  });

  it('keeps nothing from a failed read: the next lookup reads again', async () => {
    const failing = registry.get(tenant(1), 'corp');
    reads[0].fail(new Error('connection refused'));
    await expect(failing).rejects.toThrow('connection refused');
    expect(cachedName(tenant(1))).toBeUndefined();
    const retried = registry.get(tenant(1), 'corp');
    expect(reads).toHaveLength(2);
    reads[1].finish('Corp');
    expect((await retried)?.name).toBe('Corp');
  });

  it('keeps at most 10 000 tenants and forgets the least recently used first', async () => {
    byHand = false;
    for (let i = 0; i < MAX_TENANTS; i++) await registry.get(tenant(i), 'corp');
    expect(reads).toHaveLength(MAX_TENANTS);
    // Used again, so tenant 1 is now the least recently used.
    expect(cachedName(tenant(0))).toBe(`corp of ${tenant(0)}`);

    await registry.get(tenant(MAX_TENANTS), 'corp');
    expect(reads).toHaveLength(MAX_TENANTS + 1);
    expect(cachedName(tenant(0))).toBe(`corp of ${tenant(0)}`);
    expect(cachedName(tenant(2))).toBe(`corp of ${tenant(2)}`);
    expect(cachedName(tenant(1))).toBeUndefined();
    await registry.get(tenant(1), 'corp');
    expect(reads).toHaveLength(MAX_TENANTS + 2);
  });
});
