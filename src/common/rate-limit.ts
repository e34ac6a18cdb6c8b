/**
 * Failure-driven rate limiting: counts failed authentications per key (claimed client id, presented admin
 * key, source address) in a window that opens at a key's first failure, and says which keys are over their
 * limit. Only failures touch the counters: a request is checked with one in-memory lookup per key, so a
 * connector's successful requests cost nothing measurable and never count against it.
 *
 * With Redis, each failure also increments a shared counter (one script: INCR, and PEXPIRE when the key is
 * new), so replicas agree on counts and windows; a replica learns that a key is over its limit at the
 * key's next failure there. Redis is given a short deadline; when it is slow or down, counting goes on in
 * this process (and Redis is left alone for a few seconds), so the limiter never turns an outage into 5xx.
 */
import { createHash } from 'node:crypto';
import net from 'node:net';
import ipaddr from 'ipaddr.js';
import type { Redis } from 'ioredis';
import { LRUCache } from 'lru-cache';
import type { Logger } from 'pino';
import { connectRedis } from './redis.js';

export type LimitKind = 'client' | 'admin_key' | 'address';

export interface LimitKey {
  kind: LimitKind;
  id: string;
}

/** Who a credential key belongs to, once a failure has named a known connector or key. */
export interface KeyOwner {
  tenantId: string | null;
  actorId: string | null;
}

export interface FailureLimits {
  windowMs: number;
  /** Failures per claimed client id or presented admin key per window. */
  credentialFailures: number;
  /** Failures per source address (IPv4, or IPv6 /64) per window. */
  addressFailures: number;
}

/** A key's count after a failure, and its window. */
export interface KeyCount {
  key: LimitKey;
  count: number;
  windowStart: number;
  windowEnd: number;
}

/** A key over its limit: nothing is checked for it until its window ends. */
export interface Block {
  key: LimitKey;
  owner: KeyOwner | undefined;
  windowStart: number;
  windowEnd: number;
  retryAfterSeconds: number;
}

interface Entry {
  count: number;
  start: number;
  end: number;
  owner?: KeyOwner;
}

/** Counts shared between replicas; rejects when the store cannot answer. */
export interface SharedCounter {
  increment(keys: readonly LimitKey[], windowMs: number): Promise<{ count: number; ttlMs: number }[]>;
  close(): Promise<void>;
}

/** Most keys remembered in a process: a flood of made-up keys pushes out the oldest, never grows memory. */
const MAX_KEYS = 50_000;
/** After Redis failed to answer, how long counting stays in this process before Redis is tried again. */
const SHARED_BACKOFF_MS = 5_000;

const IPV4 = /^\d{1,3}(?:\.\d{1,3}){3}$/;
const ipv6Networks = new LRUCache<string, { address: string; network: string } | false>({ max: 10_000 });

/**
 * The address a request came from (already resolved through any trusted proxy by Fastify) and the network
 * it is limited by: an IPv4 address itself, an IPv6 address by its /64 (one subscriber's usual share), an
 * IPv4-mapped IPv6 address as IPv4. Null when it is not an IP address.
 */
export function sourceAddress(ip: string | undefined): { address: string; network: string } | null {
  if (ip === undefined || ip.length > 64) return null;
  if (IPV4.test(ip)) return net.isIPv4(ip) ? { address: ip, network: ip } : null;
  // Parsing IPv6 costs microseconds; the token endpoint checks every request's address.
  const known = ipv6Networks.get(ip);
  if (known !== undefined) return known || null;
  const found = ipv6Network(ip);
  ipv6Networks.set(ip, found ?? false);
  return found;
}

function ipv6Network(ip: string): { address: string; network: string } | null {
  if (!net.isIPv6(ip)) return null;
  let v6: ReturnType<typeof ipaddr.IPv6.parse>;
  try {
    v6 = ipaddr.IPv6.parse(ip);
  } catch {
    return null;
  }
  if (v6.isIPv4MappedAddress()) {
    const v4 = v6.toIPv4Address().toString();
    return { address: v4, network: v4 };
  }
  const p = v6.parts;
  const network = new ipaddr.IPv6([p[0], p[1], p[2], p[3], 0, 0, 0, 0]).toString();
  return { address: new ipaddr.IPv6(p).toString(), network: `${network}/64` };
}

/** The limit key of a source address ('unknown' when the request carried none usable). */
export function addressKey(ip: string | undefined): LimitKey {
  return { kind: 'address', id: sourceAddress(ip)?.network ?? 'unknown' };
}

/** A presented admin key is only ever remembered by a hash. */
export function adminKeyKey(presented: string): LimitKey {
  return { kind: 'admin_key', id: sha256Hex(presented).slice(0, 32) };
}

/** A claimed client id; ids no registration could have are remembered by a hash, so memory stays small. */
export function clientKey(clientId: string): LimitKey {
  return {
    kind: 'client',
    id: clientId.length <= 64 ? clientId : `sha256:${sha256Hex(clientId).slice(0, 32)}`,
  };
}

export function sha256Hex(value: string): string {
  return createHash('sha256').update(value, 'utf8').digest('hex');
}

const mapKey = (k: LimitKey) => `${k.kind}\u0000${k.id}`;

export class FailureLimiter {
  private readonly entries = new LRUCache<string, Entry>({ max: MAX_KEYS });
  /** Until when some credential key may be blocked: before that, callers need not work out a client id. */
  private credentialBlockedUntil = 0;
  private sharedDownUntil = 0;
  /** Failures counted in this process only because the shared counter did not answer (for tests, metrics). */
  localFallbacks = 0;

  constructor(
    private readonly limits: FailureLimits,
    private readonly shared: SharedCounter | null,
    private readonly log: Logger,
  ) {}

  limitOf(kind: LimitKind): number {
    return kind === 'address' ? this.limits.addressFailures : this.limits.credentialFailures;
  }

  /** Whether a credential key can be over its limit now (an in-memory comparison). */
  credentialsMayBeBlocked(now = Date.now()): boolean {
    return now < this.credentialBlockedUntil;
  }

  /**
   * The first of `keys` that has reached its limit in its current window (with `past`, gone beyond it: the
   * failure just counted was not among the allowed ones), from memory only.
   */
  blocked(keys: readonly LimitKey[], now = Date.now(), past = false): Block | null {
    if (this.entries.size === 0) return null;
    for (const key of keys) {
      const e = this.entries.get(mapKey(key));
      if (e && e.end > now && e.count >= this.limitOf(key.kind) + (past ? 1 : 0)) {
        return {
          key,
          owner: e.owner,
          windowStart: e.start,
          windowEnd: e.end,
          retryAfterSeconds: Math.max(1, Math.ceil((e.end - now) / 1000)),
        };
      }
    }
    return null;
  }

  /**
   * Counts one failure against every key and returns each key's count in its window: shared across
   * replicas when Redis answers in time, this process's own count otherwise. `owner` is remembered for
   * credential keys, so later refusals of that key can be attributed to its tenant.
   */
  async fail(keys: readonly LimitKey[], owner?: KeyOwner): Promise<KeyCount[]> {
    const now = Date.now();
    const entries = keys.map((key) => {
      const k = mapKey(key);
      let e = this.entries.get(k);
      if (!e || e.end <= now) {
        e = { count: 0, start: now, end: now + this.limits.windowMs };
        this.entries.set(k, e);
      }
      e.count++;
      if (owner && key.kind !== 'address') e.owner = owner;
      return e;
    });
    const shared = await this.sharedCounts(keys, now);
    return keys.map((key, i) => {
      const e = entries[i];
      const s = shared?.[i];
      if (s) {
        // The shared window wins, so replicas agree on when a key's window ends.
        if (s.ttlMs > 0) {
          e.end = now + s.ttlMs;
          e.start = e.end - this.limits.windowMs;
        }
        e.count = Math.max(e.count, s.count);
      }
      if (key.kind !== 'address' && e.count >= this.limitOf(key.kind)) {
        this.credentialBlockedUntil = Math.max(this.credentialBlockedUntil, e.end);
      }
      return { key, count: e.count, windowStart: e.start, windowEnd: e.end };
    });
  }

  async close(): Promise<void> {
    await this.shared?.close();
  }

  private async sharedCounts(
    keys: readonly LimitKey[],
    now: number,
  ): Promise<{ count: number; ttlMs: number }[] | null> {
    if (!this.shared || now < this.sharedDownUntil) {
      if (this.shared) this.localFallbacks++;
      return null;
    }
    try {
      return await this.shared.increment(keys, this.limits.windowMs);
    } catch (err) {
      this.localFallbacks++;
      this.sharedDownUntil = Date.now() + SHARED_BACKOFF_MS;
      this.log.warn(
        { err: { name: (err as Error).name, message: (err as Error).message } },
        'rate limiter: Redis did not answer; counting failures in this process for a while',
      );
      return null;
    }
  }
}

/** INCR each key; a new key (or one that lost its expiry) gets the window as its lifetime. */
const INCREMENT_SCRIPT = `
local out = {}
for i, key in ipairs(KEYS) do
  local n = redis.call('INCR', key)
  local ttl = redis.call('PTTL', key)
  if n == 1 or ttl < 0 then
    redis.call('PEXPIRE', key, ARGV[1])
    ttl = tonumber(ARGV[1])
  end
  out[#out + 1] = n
  out[#out + 1] = ttl
end
return out`;

/**
 * Failure counters in Redis, under `<prefix>:fail:<kind>:<hash>`: ids and addresses are hashed, so no
 * presented credential or client-chosen text is stored. Commands fail fast instead of queueing while
 * disconnected, and each has a deadline.
 */
export class RedisFailureCounter implements SharedCounter {
  private constructor(
    private readonly redis: Redis,
    private readonly prefix: string,
  ) {}

  static async connect(opts: {
    url: string;
    prefix: string;
    timeoutMs: number;
    log: Logger;
  }): Promise<RedisFailureCounter> {
    // Not waited for: Custos starts, and counts in-process, whether or not Redis is there yet.
    const redis = await connectRedis({
      url: opts.url,
      purpose: 'rate limiter',
      log: opts.log,
      options: {
        enableOfflineQueue: false,
        maxRetriesPerRequest: 0,
        commandTimeout: opts.timeoutMs,
        connectTimeout: Math.max(1000, opts.timeoutMs * 4),
        disconnectTimeout: 500,
      },
    });
    return new RedisFailureCounter(redis, opts.prefix);
  }

  async increment(keys: readonly LimitKey[], windowMs: number): Promise<{ count: number; ttlMs: number }[]> {
    const names = keys.map((k) => `${this.prefix}:fail:${k.kind}:${sha256Hex(k.id).slice(0, 32)}`);
    const raw = await this.redis.eval(INCREMENT_SCRIPT, names.length, ...names, windowMs);
    if (!Array.isArray(raw) || raw.length !== names.length * 2) throw new Error('unexpected reply');
    return names.map((_, i) => ({ count: Number(raw[2 * i]), ttlMs: Number(raw[2 * i + 1]) }));
  }

  async close(): Promise<void> {
    // Not connected: quit would wait for a connection that may never come; stop reconnecting instead.
    if (this.redis.status !== 'ready') return this.redis.disconnect();
    await this.redis.quit().catch(() => this.redis.disconnect());
  }
}

/**
 * CUSTOS_TRUST_PROXY as Fastify's `trustProxy`: unset or `false` trusts no proxy (the socket's address is
 * the client); a number trusts that many proxy hops in front of Custos; otherwise a comma-separated list
 * of proxy addresses or CIDR ranges whose X-Forwarded-For is believed.
 */
export function parseTrustProxy(value: string | undefined): false | number | string[] {
  const v = value?.trim();
  if (v === undefined || v === '' || v === 'false') return false;
  if (/^\d+$/.test(v)) {
    const hops = Number(v);
    if (hops < 1 || hops > 32) throw new Error('a hop count is 1 to 32');
    return hops;
  }
  const list = v.split(',').map((s) => s.trim());
  for (const entry of list) {
    if (!ipaddr.isValid(entry) && !ipaddr.isValidCIDR(entry)) {
      throw new Error(`${JSON.stringify(entry.slice(0, 60))} is not an IP address or CIDR range`);
    }
  }
  return list;
}

/** CUSTOS_TRUST_PROXY in the form Fastify's adapter takes (a hop count becomes the function proxy-addr uses). */
export function fastifyTrustProxy(
  trust: false | number | string[],
): boolean | string[] | ((address: string, hop: number) => boolean) {
  return typeof trust === 'number' ? (_address: string, hop: number) => hop < trust : trust;
}
