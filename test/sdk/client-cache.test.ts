/**
 * The SDK's pure rules, with a clock the test moves: when a cached token stops being served, how entries are
 * keyed and evicted, and how long to wait before another attempt. The same rules are exercised against a real
 * Custos in client.test.ts.
 */
import { randomUUID } from 'node:crypto';
import { SignJWT } from 'jose';
import { cacheKey, freshUntil, subjectKey, TokenCache, unverifiedJwtExpiry } from '../../sdk/src/cache.js';
import { CustosError } from '../../sdk/src/errors.js';
import { isRetryable, parseRetryAfter, retryDelayMs, sleep } from '../../sdk/src/retry.js';
import { newSigningKey, signJwt } from '../support/idp.js';

const MIN = 60_000;

describe('freshUntil', () => {
  it('keeps a safety margin of a tenth of the lifetime, at most a minute', () => {
    // 10 s token: served for 9 s.
    expect(freshUntil({ sentAt: 0, expiresInSeconds: 10, maxAgeMs: Infinity })).toBe(9_000);
    // One hour: served until a minute before its end.
    expect(freshUntil({ sentAt: 0, expiresInSeconds: 3600, maxAgeMs: Infinity })).toBe(59 * MIN);
    // Already expired: never served.
    expect(freshUntil({ sentAt: 1000, expiresInSeconds: 0, maxAgeMs: Infinity })).toBe(1000);
  });

  it('holds a token without expires_in (an API key) for a minute, and every token at most maxAgeMs', () => {
    expect(freshUntil({ sentAt: 0, maxAgeMs: 5 * MIN })).toBe(MIN);
    expect(freshUntil({ sentAt: 0, maxAgeMs: 10_000 })).toBe(10_000);
    expect(freshUntil({ sentAt: 0, expiresInSeconds: 3600, maxAgeMs: 5 * MIN })).toBe(5 * MIN);
  });

  it('never outlives the user token it was exchanged for', () => {
    expect(
      freshUntil({ sentAt: 0, expiresInSeconds: 3600, maxAgeMs: 5 * MIN, subjectExpiresAt: 30_000 }),
    ).toBe(30_000);
  });
});

describe('TokenCache', () => {
  let now = 0;
  const clock = () => now;
  beforeEach(() => {
    now = 1_000_000;
  });

  it('serves an entry until its freshness ends, and not a moment after', () => {
    const cache = new TokenCache<string>(10, clock);
    cache.set('k', 'token', { subject: 's', provider: 'p', freshUntil: now + 9_000 });
    now += 8_999;
    expect(cache.get('k')).toBe('token');
    now += 1;
    expect(cache.get('k')).toBeUndefined();
    // A stale entry is dropped, not kept around.
    expect(cache.size).toBe(0);
  });

  it('keeps nothing that is already stale', () => {
    const cache = new TokenCache<string>(10, clock);
    cache.set('k', 'token', { subject: 's', provider: 'p', freshUntil: now });
    expect(cache.size).toBe(0);
  });

  it('evicts the least recently used entry beyond maxEntries', () => {
    const cache = new TokenCache<string>(2, clock);
    const meta = { subject: 's', provider: 'p', freshUntil: now + MIN };
    cache.set('a', 'A', meta);
    cache.set('b', 'B', meta);
    expect(cache.get('a')).toBe('A'); // a is now the most recently used
    cache.set('c', 'C', meta);
    expect(cache.size).toBe(2);
    expect(cache.get('b')).toBeUndefined();
    expect(cache.get('a')).toBe('A');
    expect(cache.get('c')).toBe('C');
  });

  it('forgets by subject, by provider, by both, or everything', () => {
    const cache = new TokenCache<string>(10, clock);
    const fresh = now + MIN;
    const fill = () => {
      cache.set('1', 'alice-github', { subject: 'alice', provider: 'github', freshUntil: fresh });
      cache.set('2', 'alice-slack', { subject: 'alice', provider: 'slack', freshUntil: fresh });
      cache.set('3', 'bob-github', { subject: 'bob', provider: 'github', freshUntil: fresh });
    };
    fill();
    cache.forget({ subject: 'alice' });
    expect([cache.get('1'), cache.get('2'), cache.get('3')]).toEqual([undefined, undefined, 'bob-github']);
    fill();
    cache.forget({ provider: 'github' });
    expect([cache.get('1'), cache.get('2'), cache.get('3')]).toEqual([undefined, 'alice-slack', undefined]);
    fill();
    cache.forget({ subject: 'alice', provider: 'github' });
    expect([cache.get('1'), cache.get('2'), cache.get('3')]).toEqual([
      undefined,
      'alice-slack',
      'bob-github',
    ]);
    cache.forget();
    expect(cache.size).toBe(0);
  });
});

describe('cache keys', () => {
  it('key a user token by a hash of the whole token, so a forged token with the same claims differs', async () => {
    const real = await newSigningKey();
    const forged = await newSigningKey(real.kid);
    const claims = { iss: 'https://idp.example', sub: 'alice', aud: 'custos', exp: 2_000_000_000 };
    const genuine = await signJwt(real, claims);
    const forgery = await signJwt(forged, claims);
    // Same header and payload, only the signature differs.
    expect(forgery.split('.').slice(0, 2)).toEqual(genuine.split('.').slice(0, 2));
    expect(subjectKey({ subjectToken: forgery })).not.toBe(subjectKey({ subjectToken: genuine }));
    // An unsigned token (alg none) naming the same user differs too.
    const unsigned = `${genuine.split('.')[0]}.${genuine.split('.')[1]}.`;
    expect(subjectKey({ subjectToken: unsigned })).not.toBe(subjectKey({ subjectToken: genuine }));
    // The key holds no part of the token.
    expect(subjectKey({ subjectToken: genuine })).not.toContain(genuine.split('.')[1]);
  });

  it('keep user tokens and user ids apart, and treat scopes as a set', () => {
    expect(subjectKey({ userId: 'alice' })).not.toBe(subjectKey({ subjectToken: 'alice' }));
    const s = subjectKey({ userId: 'alice' });
    expect(cacheKey(s, 'github', ['repo', 'read:user'])).toBe(cacheKey(s, 'github', ['read:user', 'repo']));
    expect(cacheKey(s, 'github', ['repo'])).not.toBe(cacheKey(s, 'github', ['repo', 'read:user']));
    expect(cacheKey(s, 'github', [])).not.toBe(cacheKey(s, 'gitlab', []));
    // No separator trick joins two fields into another key.
    expect(cacheKey('user:a', 'b c', [])).not.toBe(cacheKey('user:a b', 'c', []));
  });

  it('read a JWT’s exp without trusting it, and nothing from a non-JWT', async () => {
    const key = await newSigningKey();
    const token = await new SignJWT({ sub: 'u', jti: randomUUID() })
      .setProtectedHeader({ alg: 'ES256' })
      .setExpirationTime(1_900_000_000)
      .sign(key.privateKey);
    expect(unverifiedJwtExpiry(token)).toBe(1_900_000_000_000);
    expect(unverifiedJwtExpiry('not-a-jwt')).toBeUndefined();
    expect(unverifiedJwtExpiry('a.b.c')).toBeUndefined();
    const noExp = `${token.split('.')[0]}.${Buffer.from('{"sub":"u"}').toString('base64url')}.x`;
    expect(unverifiedJwtExpiry(noExp)).toBeUndefined();
  });
});

describe('retry rules', () => {
  const policy = { attempts: 3, baseDelayMs: 200, maxDelayMs: 5_000 };

  it('reads Retry-After as seconds or as an HTTP date', () => {
    const now = Date.parse('2026-12-04T10:00:00Z');
    expect(parseRetryAfter('5', now)).toBe(5);
    expect(parseRetryAfter(' 0 ', now)).toBe(0);
    expect(parseRetryAfter('Fri, 04 Dec 2026 10:00:30 GMT', now)).toBe(30);
    expect(parseRetryAfter('Fri, 04 Dec 2026 09:00:00 GMT', now)).toBe(0);
    expect(parseRetryAfter('soon', now)).toBeUndefined();
    expect(parseRetryAfter('-1', now)).toBeUndefined();
    expect(parseRetryAfter('2027', now)).toBe(2027);
    expect(parseRetryAfter(null, now)).toBeUndefined();
  });

  it('honours Retry-After up to maxDelayMs, else backs off exponentially with full jitter', () => {
    expect(retryDelayMs(policy, 1, 2)).toBe(2_000);
    expect(retryDelayMs(policy, 1, 120)).toBe(5_000);
    expect(retryDelayMs(policy, 1, undefined, () => 0)).toBe(0);
    expect(retryDelayMs(policy, 1, undefined, () => 0.999)).toBe(199);
    expect(retryDelayMs(policy, 3, undefined, () => 0.999)).toBe(799);
    expect(retryDelayMs(policy, 10, undefined, () => 0.999)).toBe(4_995);
  });

  it('retries network errors, timeouts, 429 and 502-504, and nothing else', () => {
    expect(isRetryable(new CustosError('network_error', 'x'))).toBe(true);
    expect(isRetryable(new CustosError('timeout', 'x'))).toBe(true);
    for (const status of [429, 502, 503, 504]) {
      expect(isRetryable(new CustosError('whatever', 'x', { status }))).toBe(true);
    }
    for (const status of [400, 401, 403, 404, 409, 500]) {
      expect(isRetryable(new CustosError('whatever', 'x', { status }))).toBe(false);
    }
    expect(isRetryable(new Error('x'))).toBe(false);
  });

  it('stops waiting as soon as the signal aborts, with its reason', async () => {
    const controller = new AbortController();
    const reason = new Error('stop');
    const waiting = sleep(60_000, controller.signal);
    controller.abort(reason);
    await expect(waiting).rejects.toBe(reason);
    await expect(sleep(60_000, AbortSignal.abort(reason))).rejects.toBe(reason);
  });
});
