/**
 * The failure limiter on its own: address grouping, limits and windows in memory, counts shared through a
 * real Redis, and counting in-process when Redis is gone or silent.
 */
import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { ConfigError, loadConfig } from '../../../src/config/config.js';
import { createLogger } from '../../../src/common/logger.js';
import {
  addressKey,
  adminKeyKey,
  clientKey,
  FailureLimiter,
  parseTrustProxy,
  RedisFailureCounter,
  sourceAddress,
  type KeyCount,
  type LimitKey,
} from '../../../src/common/rate-limit.js';
import { startBlackholeProxy } from '../../support/blackhole-proxy.js';
import { testRedisUrl } from '../../support/env.js';

const log = createLogger('silent');
const limits = { windowMs: 60_000, credentialFailures: 3, addressFailures: 5 };

async function failTimes(limiter: FailureLimiter, keys: LimitKey[], n: number) {
  let last: KeyCount[] = [];
  for (let i = 0; i < n; i++) last = await limiter.fail(keys);
  return last;
}

describe('sourceAddress', () => {
  it('limits IPv4 by address, IPv6 by its /64, and IPv4-mapped IPv6 as IPv4', () => {
    expect(sourceAddress('203.0.113.7')).toEqual({ address: '203.0.113.7', network: '203.0.113.7' });
    const a = sourceAddress('2001:db8:1:2:aaaa::1');
    const b = sourceAddress('2001:0db8:0001:0002:ffff:ffff:ffff:ffff');
    const c = sourceAddress('2001:db8:1:3::1');
    expect(a?.network).toBe('2001:db8:1:2::/64');
    expect(b?.network).toBe(a?.network);
    expect(c?.network).not.toBe(a?.network);
    expect(a?.address).toBe('2001:db8:1:2:aaaa::1');
    expect(sourceAddress('::ffff:198.51.100.4')).toEqual({
      address: '198.51.100.4',
      network: '198.51.100.4',
    });
    expect(addressKey('2001:db8:1:2::9')).toEqual({ kind: 'address', id: '2001:db8:1:2::/64' });
  });

  it.each([undefined, '', 'not-an-ip', '999.1.1.1', '1.2.3.4, 5.6.7.8', '2001:db8::zz', '1.2.3.4\u0000'])(
    'gives no address for %j (its failures count under "unknown")',
    (ip) => {
      expect(sourceAddress(ip)).toBeNull();
      expect(addressKey(ip)).toEqual({ kind: 'address', id: 'unknown' });
    },
  );
});

describe('keys never hold a presented secret', () => {
  it('remembers an admin key by a hash and an overlong client id by a hash', () => {
    const presented = `cus_${'s'.repeat(43)}`;
    expect(JSON.stringify(adminKeyKey(presented))).not.toContain(presented);
    expect(adminKeyKey(presented)).toEqual(adminKeyKey(presented));
    expect(clientKey('cus_ci_short').id).toBe('cus_ci_short');
    const long = 'x'.repeat(500);
    expect(clientKey(long).id).toMatch(/^sha256:[0-9a-f]{32}$/);
  });
});

describe('CUSTOS_TRUST_PROXY', () => {
  it('is off by default, or a hop count, or a list of addresses and CIDR ranges', () => {
    expect(parseTrustProxy(undefined)).toBe(false);
    expect(parseTrustProxy('false')).toBe(false);
    expect(parseTrustProxy('2')).toBe(2);
    expect(parseTrustProxy('10.0.0.0/8, 192.0.2.1,2001:db8::/32')).toEqual([
      '10.0.0.0/8',
      '192.0.2.1',
      '2001:db8::/32',
    ]);
    expect(loadConfig({})).toMatchObject({
      trustProxy: false,
      rateLimitWindowSeconds: 60,
      rateLimitCredentialFailures: 10,
      rateLimitAddressFailures: 100,
      auditDenialsPerWindow: 10,
    });
    expect(loadConfig({ CUSTOS_TRUST_PROXY: '1' }).trustProxy).toBe(1);
  });

  it.each(['true', '0', '99', '10.0.0.0/8,proxy.internal', '10.0.0.0/99'])(
    'fails fast naming the variable for %j',
    (value) => {
      expect(() => loadConfig({ CUSTOS_TRUST_PROXY: value })).toThrow(ConfigError);
      expect(() => loadConfig({ CUSTOS_TRUST_PROXY: value })).toThrow(/CUSTOS_TRUST_PROXY/);
    },
  );
});

describe('FailureLimiter in one process', () => {
  it('blocks a key once its failures reach the limit, until its window ends, and no other key', async () => {
    const limiter = new FailureLimiter(limits, null, log);
    const victim = clientKey('cus_ci_victim');
    const other = clientKey('cus_ci_other');
    const from = addressKey('203.0.113.1');
    expect(limiter.blocked([victim, from])).toBeNull();
    expect(limiter.credentialsMayBeBlocked()).toBe(false);

    const counts = await failTimes(limiter, [victim, from], 2);
    expect(counts.map((c) => c.count)).toEqual([2, 2]);
    expect(limiter.blocked([victim, from])).toBeNull();

    const [third] = await limiter.fail([victim, from]);
    expect(third.count).toBe(3);
    const block = limiter.blocked([victim, from]);
    expect(block?.key).toEqual(victim);
    expect(block!.retryAfterSeconds).toBeGreaterThanOrEqual(1);
    expect(block!.retryAfterSeconds).toBeLessThanOrEqual(60);
    expect(limiter.credentialsMayBeBlocked()).toBe(true);
    expect(limiter.blocked([other, addressKey('203.0.113.2')])).toBeNull();
    // The address has 3 of its 5.
    expect(limiter.blocked([from])).toBeNull();
    // Once the window is over, the key starts again.
    expect(limiter.blocked([victim], block!.windowEnd)).toBeNull();
  });

  it('blocks an address at its own limit without marking any credential as blocked', async () => {
    const limiter = new FailureLimiter(limits, null, log);
    const from = addressKey('2001:db8:5:6::1');
    for (let i = 0; i < 5; i++)
      await limiter.fail([clientKey(`cus_ci_${i}`), addressKey(`2001:db8:5:6::${i + 1}`)]);
    expect(limiter.blocked([from])?.key).toEqual(from);
    expect(limiter.blocked([addressKey('2001:db8:5:7::1')])).toBeNull();
    expect(limiter.credentialsMayBeBlocked()).toBe(false);
  });

  it('remembers who a credential key belongs to, for attributing later refusals', async () => {
    const limiter = new FailureLimiter(limits, null, log);
    const victim = clientKey('cus_ci_owned');
    await failTimes(limiter, [victim], 2);
    await limiter.fail([victim], { tenantId: 'tenant-1', actorId: 'connector-1' });
    expect(limiter.blocked([victim])?.owner).toEqual({ tenantId: 'tenant-1', actorId: 'connector-1' });
  });
});

describe('FailureLimiter with Redis', () => {
  const prefix = `custos-test-rl-${randomUUID()}`;
  let admin: Redis;
  const counters: RedisFailureCounter[] = [];
  const connect = async (url = testRedisUrl) => {
    const c = await RedisFailureCounter.connect({ url, prefix, timeoutMs: 250, log });
    counters.push(c);
    return c;
  };
  const until = async (f: () => Promise<boolean>) => {
    for (let i = 0; i < 200 && !(await f()); i++) await new Promise((r) => setTimeout(r, 25));
  };

  beforeAll(async () => {
    admin = new Redis(testRedisUrl);
  });
  afterAll(async () => {
    for (const c of counters) await c.close();
    const keys = await admin.keys(`${prefix}:*`);
    if (keys.length > 0) await admin.del(...keys);
    await admin.quit();
  });

  it('shares counts and windows between processes, and stores no id or address in Redis', async () => {
    const [ca, cb] = [await connect(), await connect()];
    const a = new FailureLimiter(limits, ca, log);
    const b = new FailureLimiter(limits, cb, log);
    // Let both connect: until then a failure is counted in-process only.
    await until(async () => (await ca.increment([clientKey('warm-a')], 1000).catch(() => null)) !== null);
    await until(async () => (await cb.increment([clientKey('warm-b')], 1000).catch(() => null)) !== null);

    const victim = clientKey(`cus_ci_${randomUUID().slice(0, 8)}`);
    const from = addressKey('198.51.100.77');
    await failTimes(a, [victim, from], 2);
    const [v, f] = await b.fail([victim, from]);
    expect(v.count).toBe(3);
    expect(f.count).toBe(3);
    expect(b.blocked([victim])?.key).toEqual(victim);
    // `a` has not seen the third failure: it learns at its next one.
    expect(a.blocked([victim])).toBeNull();
    const [again] = await a.fail([victim]);
    expect(again.count).toBe(4);
    expect(a.blocked([victim])?.key).toEqual(victim);
    // One window for the key, whichever process counted.
    expect(Math.abs(again.windowEnd - v.windowEnd)).toBeLessThan(1000);
    expect(a.localFallbacks + b.localFallbacks).toBe(0);

    const stored = await admin.keys(`${prefix}:fail:*`);
    expect(stored.length).toBeGreaterThanOrEqual(2);
    for (const k of stored) {
      expect(k).not.toContain(victim.id);
      expect(k).not.toContain('198.51.100.77');
      expect(await admin.pttl(k)).toBeGreaterThan(0);
    }
  });

  it('counts in this process when Redis cannot be reached, without failing or waiting', async () => {
    const limiter = new FailureLimiter(limits, await connect('redis://127.0.0.1:1'), log);
    const victim = clientKey('cus_ci_down');
    const counts = await failTimes(limiter, [victim], 3);
    expect(counts[0].count).toBe(3);
    expect(limiter.blocked([victim])?.key).toEqual(victim);
    expect(limiter.localFallbacks).toBe(3);
  });

  it('counts in this process when Redis stops answering (a silent partition), after a short deadline', async () => {
    const proxy = await startBlackholeProxy('127.0.0.1', Number(new URL(testRedisUrl).port || 6379));
    const counter = await connect(`redis://127.0.0.1:${proxy.port}`);
    try {
      const limiter = new FailureLimiter(limits, counter, log);
      const victim = clientKey(`cus_ci_${randomUUID().slice(0, 8)}`);
      await until(
        async () => (await counter.increment([clientKey('warm-c')], 1000).catch(() => null)) !== null,
      );
      const [first] = await limiter.fail([victim]);
      expect(first.count).toBe(1);
      expect(limiter.localFallbacks).toBe(0);

      proxy.blackhole();
      const counts = await failTimes(limiter, [victim], 2);
      expect(counts[0].count).toBe(3);
      expect(limiter.blocked([victim])?.key).toEqual(victim);
      expect(limiter.localFallbacks).toBe(2);
    } finally {
      proxy.restore();
      await counter.close();
      await proxy.close();
    }
  });
});
