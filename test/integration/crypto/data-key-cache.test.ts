/**
 * The unwrapped data-key cache against the real key backend and database: it holds at most
 * CUSTOS_DATA_KEY_CACHE_MAX_ENTRIES keys with the least recently used evicted first, a tenant flush drops that
 * tenant's keys only, and a key that leaves the cache is dropped, not zeroed, since a request may still be
 * using its buffer.
 */
import { DataKeyService } from '../../../src/crypto/data-key.service.js';
import { startTestApp, type TestApp } from '../../support/app.js';
import { createTenant, type TenantFixture } from '../../support/factories.js';

let app: TestApp;
let tenants: TenantFixture[];

beforeAll(async () => {
  app = await startTestApp({ CUSTOS_DATA_KEY_CACHE_MAX_ENTRIES: '2' });
  tenants = [await createTenant(app), await createTenant(app), await createTenant(app)];
});
afterAll(() => app.close());

const dataKeys = () => app.custos.app.get(DataKeyService);

describe('data-key cache', () => {
  it('holds at most CUSTOS_DATA_KEY_CACHE_MAX_ENTRIES keys and evicts the least recently used first', async () => {
    const [a, b, c] = tenants.map((t) => t.tenantId);
    const keyA = await dataKeys().sealingKey(a);
    const keyB = await dataKeys().sealingKey(b);
    const heldB = Buffer.from(keyB.key);
    // Used again, so b's key is now the least recently used.
    expect(dataKeys().isCached(a, keyA.dataKeyId)).toBe(true);
    const keyC = await dataKeys().sealingKey(c);

    expect(dataKeys().cacheSize()).toBe(2);
    expect(dataKeys().isCached(b, keyB.dataKeyId)).toBe(false);
    expect(dataKeys().isCached(a, keyA.dataKeyId)).toBe(true);
    expect(dataKeys().isCached(c, keyC.dataKeyId)).toBe(true);
    // The evicted key's buffer is left as it was for whoever still holds it.
    expect(keyB.key.equals(heldB)).toBe(true);

    const before = dataKeys().unwrapCalls;
    expect((await dataKeys().keyById(b, keyB.dataKeyId)).equals(heldB)).toBe(true);
    expect(dataKeys().unwrapCalls - before).toBe(1);
    expect(dataKeys().cacheSize()).toBe(2);
  });

  it("remembers as many tenants' current epochs as it caches keys; a forgotten one is read again, not renewed", async () => {
    const [a, b, c] = tenants.map((t) => t.tenantId);
    const first = await dataKeys().sealingKey(a);
    await dataKeys().sealingKey(b);
    await dataKeys().sealingKey(c);
    expect(dataKeys().epochsCached()).toBe(2);
    expect((await dataKeys().sealingKey(a)).dataKeyId).toBe(first.dataKeyId);
    expect(dataKeys().epochsCached()).toBe(2);
  });

  it("drops a flushed tenant's keys and no other tenant's, and unwraps again on the next read", async () => {
    const [a, b] = tenants.map((t) => t.tenantId);
    const keyA = await dataKeys().sealingKey(a);
    const keyB = await dataKeys().sealingKey(b);
    const heldA = Buffer.from(keyA.key);

    dataKeys().flushTenant(a);
    expect(dataKeys().isCached(a, keyA.dataKeyId)).toBe(false);
    expect(dataKeys().isCached(b, keyB.dataKeyId)).toBe(true);
    expect(dataKeys().cacheSize()).toBe(1);
    expect(keyA.key.equals(heldA)).toBe(true);

    const before = dataKeys().unwrapCalls;
    expect((await dataKeys().keyById(a, keyA.dataKeyId)).equals(heldA)).toBe(true);
    expect((await dataKeys().keyById(b, keyB.dataKeyId)).equals(keyB.key)).toBe(true);
    expect(dataKeys().unwrapCalls - before).toBe(1);
  });
});
