/**
 * Verifies a user's token from one of the tenant's trusted identity providers (RFC 8693 subject_token of
 * type JWT) with the shared verifier (src/identity/idp-token-verifier.ts: headers, algorithms, signature,
 * `iss`, `aud`, `exp`, `nbf`), finding the provider by the token's `iss`; the provider's `userClaim` must
 * name a user, and `azp` (else `client_id`) names the agent application when present.
 *
 * Verified tokens are cached by a hash of the token (bounded, least recently used out first, never past
 * `exp`), because signature checks cost more CPU than anything else on the hot path. Each cache entry
 * remembers the provider's version (`updated_at`); the token endpoint reads the current version in the same
 * query that loads the connection, so a changed or deleted provider invalidates its cached verifications on
 * the very next request.
 */
import { createHash } from 'node:crypto';
import { Inject, Injectable } from '@nestjs/common';
import type { JWTPayload } from 'jose';
import { LRUCache } from 'lru-cache';
import { textProblem, userIdSchema } from '../common/validation.js';
import { IdentityProvidersService, type IdentityProviderView } from './identity-providers.service.js';
import {
  IdpTokenError,
  inspectIdpToken,
  verifyIdpToken,
  type InspectedIdpToken,
} from './idp-token-verifier.js';
import { JwksResolver, JwksUnavailableError } from './jwks-resolver.js';

export interface VerifiedSubject {
  userId: string;
  issuer: string;
  identityProvider: string;
  /** The identity provider's version when the token was verified. */
  identityProviderVersion: number;
  /** The agent application the user is using (`azp`, else `client_id`), when the token names it. */
  agentClientId: string | null;
  expiresAt: number;
}

/** Why a subject token is refused; `reason` is stable and goes to the audit trail. */
export class SubjectTokenError extends Error {
  constructor(
    readonly reason: string,
    message: string,
    /** The key set could not be fetched: not the token's fault. */
    readonly unavailable = false,
    /** The refusal rests on provider settings from the cache. */
    public fromCachedProvider = false,
  ) {
    super(message);
    this.name = 'SubjectTokenError';
  }
}

const MAX_TOKEN_CHARS = 16 * 1024;
const CACHE_MAX = 20_000;
const IDP_CACHE_MAX = 10_000;
const IDP_CACHE_MS = 30_000;

export const idpVersion = (idp: { updatedAt: string } | { updated_at: Date }): number =>
  'updatedAt' in idp ? Date.parse(idp.updatedAt) : idp.updated_at.getTime();

@Injectable()
export class SubjectTokenVerifier {
  /**
   * Verified tokens, kept no longer than their `exp`: checked against Date.now() on every hit rather than
   * with the cache's own TTL, whose clock is monotonic while `exp` is wall-clock time.
   */
  private readonly verified = new LRUCache<string, VerifiedSubject & { tenantId: string }>({
    max: CACHE_MAX,
  });
  /**
   * Providers' settings by tenant and issuer, used for IDP_CACHE_MS. `ttlResolution: 0` reads the clock on
   * each lookup instead of arming a timer to cache it.
   */
  private readonly idps = new LRUCache<string, IdentityProviderView>({
    max: IDP_CACHE_MAX,
    ttl: IDP_CACHE_MS,
    ttlResolution: 0,
  });
  /** Tokens handed to the shared verifier (cache misses), for tests and benchmarks. */
  verifications = 0;

  constructor(
    @Inject(IdentityProvidersService) private readonly identityProviders: IdentityProvidersService,
    @Inject(JwksResolver) private readonly jwks: JwksResolver,
  ) {}

  async verify(tenantId: string, token: string): Promise<VerifiedSubject> {
    if (token.length > MAX_TOKEN_CHARS) throw new SubjectTokenError('malformed', 'subject_token is too long');
    const cacheKey = createHash('sha256').update(tenantId).update('\0').update(token).digest('base64url');
    const hit = this.verified.get(cacheKey);
    if (hit) {
      if (hit.expiresAt > Date.now() && hit.tenantId === tenantId) return hit;
      this.verified.delete(cacheKey);
    }
    let subject: VerifiedSubject;
    try {
      subject = await this.verifyUncached(tenantId, token, false);
    } catch (err) {
      // A refusal based on cached provider settings is checked again against the database: the provider may
      // have changed (new keys, another audience) since they were cached.
      if (!(err instanceof SubjectTokenError) || !err.fromCachedProvider) throw err;
      subject = await this.verifyUncached(tenantId, token, true);
    }
    this.verified.set(cacheKey, { ...subject, tenantId });
    return subject;
  }

  /** Forgets cached verifications and provider settings of a tenant's issuer (the provider changed). */
  invalidateIssuer(tenantId: string, issuer: string): void {
    this.idps.delete(`${tenantId}\0${issuer}`);
    const stale: string[] = [];
    for (const [k, v] of this.verified.entries())
      if (v.tenantId === tenantId && v.issuer === issuer) stale.push(k);
    for (const k of stale) this.verified.delete(k);
  }

  private async verifyUncached(tenantId: string, token: string, fresh: boolean): Promise<VerifiedSubject> {
    let inspected: InspectedIdpToken;
    try {
      inspected = inspectIdpToken(token, 'subject_token');
    } catch (err) {
      throw subjectTokenError(err);
    }
    const unverifiedIss = inspected.issuer;
    if (typeof unverifiedIss !== 'string')
      throw new SubjectTokenError('no_issuer', 'subject_token has no iss');
    // Unverified text goes nowhere (no lookup, no cache key, no audit) unless it passes the string rule.
    if (textProblem(unverifiedIss) !== null) {
      throw new SubjectTokenError('malformed_issuer', 'subject_token has a malformed iss');
    }
    const { idp, cached } = await this.identityProvider(tenantId, unverifiedIss, fresh);
    const refuse = (e: SubjectTokenError) => {
      e.fromCachedProvider = cached;
      return e;
    };
    if (!idp) {
      throw refuse(
        new SubjectTokenError('untrusted_issuer', 'The token’s issuer is not trusted by this tenant'),
      );
    }
    let payload: JWTPayload;
    try {
      this.verifications++;
      payload = await verifyIdpToken(inspected, idp, this.jwks.keyGetter(idp), { audience: idp.audiences });
    } catch (err) {
      const e = subjectTokenError(err);
      // Expiry and timing do not depend on the provider's settings.
      throw e.reason === 'expired' || e.reason === 'not_yet_valid' || e.unavailable ? e : refuse(e);
    }
    const user = payload[idp.userClaim];
    if (typeof user !== 'string' || !userIdSchema.safeParse(user).success) {
      throw refuse(
        new SubjectTokenError('no_user', `The token’s "${idp.userClaim}" claim does not name a user`),
      );
    }
    const azp = typeof payload.azp === 'string' ? payload.azp : payload.client_id;
    // Signed, but still the issuer's text: refused whole rather than cut (a cut can split a surrogate pair).
    if (typeof azp === 'string' && (azp.length > 255 || textProblem(azp) !== null)) {
      throw new SubjectTokenError('invalid_azp', 'The token’s azp (or client_id) claim is malformed');
    }
    return {
      userId: user,
      issuer: idp.issuer,
      identityProvider: idp.name,
      identityProviderVersion: idpVersion(idp),
      agentClientId: typeof azp === 'string' ? azp : null,
      // Cached no longer than the token's own expiry (verification itself allows the clock tolerance).
      expiresAt: (payload.exp as number) * 1000,
    };
  }

  private async identityProvider(
    tenantId: string,
    issuer: string,
    fresh: boolean,
  ): Promise<{ idp: IdentityProviderView | null; cached: boolean }> {
    const key = `${tenantId}\0${issuer}`;
    const hit = fresh ? undefined : this.idps.get(key);
    if (hit) return { idp: hit, cached: true };
    if (issuer.length > 2048) return { idp: null, cached: false };
    const idp = await this.identityProviders.findByIssuer(tenantId, issuer);
    // Unknown issuers are not cached: made-up issuers would otherwise crowd out real ones.
    if (idp) this.idps.set(key, idp);
    else this.idps.delete(key);
    return { idp, cached: false };
  }
}

/** The token endpoint's refusal: the shared verifier's, or an outage of the issuer's key set. */
function subjectTokenError(err: unknown): SubjectTokenError {
  if (err instanceof IdpTokenError) return new SubjectTokenError(err.reason, err.message);
  if (err instanceof JwksUnavailableError) {
    return new SubjectTokenError('keys_unavailable', 'The issuer’s signing keys are unavailable', true);
  }
  return new SubjectTokenError('invalid', 'subject_token could not be verified');
}
