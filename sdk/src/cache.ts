/**
 * The in-memory token cache: least recently used entries out first, each served only while it is fresh.
 *
 * Freshness: a token with `expires_in` is served while more than min(60 s, a tenth of its lifetime) is left,
 * counted from when the request was sent; a token without one (an API key) for `defaultTtlMs`; never longer
 * than `maxAgeMs`, and never past the expiry of the user token it was exchanged for.
 *
 * Keys: a user token is keyed by the SHA-256 of the whole token, never by its (unverified) claims, so a forged
 * token naming another user's `sub` cannot reach that user's cached token; a user id is keyed by itself.
 */
import { createHash } from 'node:crypto';

export interface CacheOptions {
  /** How many tokens are kept; the least recently used goes first. Default 1000. */
  maxEntries?: number;
  /** The longest any token is served from the cache, whatever its `expires_in`. Default 5 minutes. */
  maxAgeMs?: number;
}

export const DEFAULT_MAX_ENTRIES = 1000;
export const DEFAULT_MAX_AGE_MS = 5 * 60_000;
/** Tokens without `expires_in` (API keys) are served from the cache for at most this long. */
export const DEFAULT_TTL_WITHOUT_EXPIRY_MS = 60_000;
/** The safety margin before `expires_in` runs out: this, or a tenth of the lifetime when that is shorter. */
const MAX_MARGIN_MS = 60_000;

/** Who a token is for, as a cache key component. */
export type Subject = { subjectToken: string } | { userId: string };

export function subjectKey(subject: Subject): string {
  if ('subjectToken' in subject) {
    return 'jwt:' + createHash('sha256').update(subject.subjectToken, 'utf8').digest('base64url');
  }
  return 'user:' + subject.userId;
}

export function cacheKey(subject: string, provider: string, scopes: readonly string[]): string {
  return JSON.stringify([subject, provider, [...scopes].sort()]);
}

/**
 * The `exp` of a token that decodes as a JWT, in milliseconds; undefined otherwise. Decoded without any
 * verification, and so used only to cut a cache entry short, never to choose or share one.
 */
export function unverifiedJwtExpiry(token: string): number | undefined {
  const parts = token.split('.');
  if (parts.length !== 3) return undefined;
  try {
    const payload: unknown = JSON.parse(Buffer.from(parts[1], 'base64url').toString('utf8'));
    if (typeof payload !== 'object' || payload === null) return undefined;
    const exp = (payload as { exp?: unknown }).exp;
    return typeof exp === 'number' && Number.isFinite(exp) ? exp * 1000 : undefined;
  } catch {
    return undefined;
  }
}

export interface Freshness {
  /** When the request that got the token was sent (ms). */
  sentAt: number;
  /** The token's `expires_in`, in seconds. */
  expiresInSeconds?: number;
  /** The user token's own expiry (ms), when it has one. */
  subjectExpiresAt?: number;
  maxAgeMs: number;
  ttlWithoutExpiryMs?: number;
}

/** Until when (ms) a token may be served from the cache. */
export function freshUntil(f: Freshness): number {
  let until: number;
  if (f.expiresInSeconds !== undefined) {
    const lifetime = f.expiresInSeconds * 1000;
    until = f.sentAt + lifetime - Math.min(MAX_MARGIN_MS, lifetime / 10);
  } else {
    until = f.sentAt + Math.min(f.ttlWithoutExpiryMs ?? DEFAULT_TTL_WITHOUT_EXPIRY_MS, f.maxAgeMs);
  }
  until = Math.min(until, f.sentAt + f.maxAgeMs);
  if (f.subjectExpiresAt !== undefined) until = Math.min(until, f.subjectExpiresAt);
  return until;
}

interface Entry<T> {
  value: T;
  subject: string;
  provider: string;
  freshUntil: number;
}

export class TokenCache<T> {
  private readonly entries = new Map<string, Entry<T>>();

  constructor(
    private readonly maxEntries: number,
    private readonly now: () => number = Date.now,
  ) {}

  get size(): number {
    return this.entries.size;
  }

  /** The entry under `key` if it is still fresh (and it becomes the most recently used). */
  get(key: string): T | undefined {
    const entry = this.entries.get(key);
    if (!entry) return undefined;
    this.entries.delete(key);
    if (this.now() >= entry.freshUntil) return undefined;
    this.entries.set(key, entry);
    return entry.value;
  }

  /** Keeps `value` until `freshUntil` (nothing is kept that is already stale). */
  set(key: string, value: T, meta: { subject: string; provider: string; freshUntil: number }): void {
    this.entries.delete(key);
    if (this.now() >= meta.freshUntil) return;
    this.entries.set(key, { value, ...meta });
    while (this.entries.size > this.maxEntries) {
      const oldest = this.entries.keys().next().value as string;
      this.entries.delete(oldest);
    }
  }

  /** Drops the entries matching every given field (all entries without a filter). */
  forget(filter: { subject?: string; provider?: string } = {}): void {
    if (filter.subject === undefined && filter.provider === undefined) {
      this.entries.clear();
      return;
    }
    for (const [key, entry] of this.entries) {
      if (filter.subject !== undefined && entry.subject !== filter.subject) continue;
      if (filter.provider !== undefined && entry.provider !== filter.provider) continue;
      this.entries.delete(key);
    }
  }
}
