/**
 * Signing keys for token verification: a registered JWK Set as is, or a `jwks_uri` fetched through the
 * SSRF-safe client and cached. An unknown `kid` triggers at most one refetch per cooldown (key rotation at
 * the issuer), so a stream of forged kids cannot turn into a stream of outbound requests. Fetched sets get
 * the same public-key checks as registered ones; a set with private members is refused.
 */
import { Inject, Injectable } from '@nestjs/common';
import {
  createLocalJWKSet,
  errors as joseErrors,
  type FlattenedJWSInput,
  type CompactJWSHeaderParameters,
  type JWTVerifyGetKey,
} from 'jose';
import { LRUCache } from 'lru-cache';
import type { Logger } from 'pino';
import { LOGGER } from '../common/logger.js';
import { OutboundHttpClient } from '../common/outbound-http.js';
import { publicJwksSchema, type PublicJwks } from './jwk.js';

/** How long a fetched key set is used before it is fetched again. */
const FRESH_MS = 10 * 60_000;
/** The least time between two fetches of one URI (unknown kid, or a failed fetch). */
const COOLDOWN_MS = 30_000;
/** Key-set URIs remembered at once; the least recently used is forgotten first. */
const MAX_URIS = 1000;

interface RemoteSet {
  getKey: JWTVerifyGetKey | null;
  fetchedAt: number;
  attemptedAt: number;
  inflight: Promise<void> | null;
}

export class JwksUnavailableError extends Error {
  constructor(readonly reason: string) {
    super(`Signing keys unavailable: ${reason}`);
    this.name = 'JwksUnavailableError';
  }
}

@Injectable()
export class JwksResolver {
  /**
   * No TTL here: a set stays usable past FRESH_MS while its issuer is down, and its `attemptedAt` must
   * outlive the cooldown for the cooldown to hold.
   */
  private readonly remote = new LRUCache<string, RemoteSet>({ max: MAX_URIS });
  private readonly local = new WeakMap<PublicJwks, JWTVerifyGetKey>();
  /** Key-set fetches made (for tests and metrics). */
  fetches = 0;

  constructor(
    @Inject(OutboundHttpClient) private readonly outbound: OutboundHttpClient,
    @Inject(LOGGER) private readonly log: Logger,
  ) {}

  /** A jose key getter for a registration that has inline keys or a key-set URI. */
  keyGetter(source: { jwks: PublicJwks | null; jwksUri: string | null }): JWTVerifyGetKey {
    if (source.jwks) {
      let getKey = this.local.get(source.jwks);
      if (!getKey) {
        getKey = createLocalJWKSet(source.jwks);
        this.local.set(source.jwks, getKey);
      }
      return getKey;
    }
    if (source.jwksUri) {
      const uri = source.jwksUri;
      return (header: CompactJWSHeaderParameters, token: FlattenedJWSInput) =>
        this.remoteKey(uri, header, token);
    }
    throw new JwksUnavailableError('no keys registered');
  }

  /** Forgets a cached key set (the registration changed). */
  forget(uri: string): void {
    this.remote.delete(uri);
  }

  private async remoteKey(uri: string, header: CompactJWSHeaderParameters, token: FlattenedJWSInput) {
    let set = this.remote.get(uri);
    const now = Date.now();
    if (!set) {
      set = { getKey: null, fetchedAt: 0, attemptedAt: 0, inflight: null };
      this.remote.set(uri, set);
    }
    if (!set.getKey || now - set.fetchedAt > FRESH_MS) await this.refresh(uri, set);
    if (!set.getKey) throw new JwksUnavailableError('key set could not be fetched');
    try {
      return await set.getKey(header, token);
    } catch (err) {
      if (!(err instanceof joseErrors.JWKSNoMatchingKey)) throw err;
      // Perhaps the issuer rotated its keys: look again, but not more often than the cooldown allows.
      if (Date.now() - set.attemptedAt < COOLDOWN_MS) throw err;
      await this.refresh(uri, set);
      return set.getKey(header, token);
    }
  }

  /** Fetches the set again unless a fetch is under way or one was tried within the cooldown. */
  private refresh(uri: string, set: RemoteSet): Promise<void> {
    if (set.inflight) return set.inflight;
    if (Date.now() - set.attemptedAt < COOLDOWN_MS) return Promise.resolve();
    set.attemptedAt = Date.now();
    set.inflight = (async () => {
      try {
        this.fetches++;
        const res = await this.outbound.request(uri, {
          headers: { accept: 'application/json, application/jwk-set+json' },
          timeoutMs: 5000,
          maxResponseBytes: 256 * 1024,
        });
        if (res.status !== 200) throw new JwksUnavailableError(`HTTP ${res.status}`);
        const parsed = publicJwksSchema.safeParse(JSON.parse(res.body.toString('utf8')));
        if (!parsed.success) throw new JwksUnavailableError('not a set of public signing keys');
        set.getKey = createLocalJWKSet(parsed.data);
        set.fetchedAt = Date.now();
      } catch (err) {
        // A stale set keeps working through an outage of the issuer's key endpoint.
        this.log.warn(
          { jwksUri: uri, err: { name: (err as Error).name, reason: (err as JwksUnavailableError).reason } },
          'could not fetch a JWK Set',
        );
      } finally {
        set.inflight = null;
      }
    })();
    return set.inflight;
  }
}
