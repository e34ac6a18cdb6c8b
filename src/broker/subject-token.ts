/**
 * Verifies a user's token from one of the tenant's trusted identity providers (RFC 8693 subject_token of
 * type JWT): signature with the provider's keys, algorithms pinned to the provider's list, `iss`, `aud`,
 * `exp` (required) and `nbf`. Refused before any key lookup: `alg: none` or any algorithm the provider does
 * not allow, `jku`/`x5u`/`x5c`/`jwk` headers (keys named by the token itself), and `crit`.
 *
 * Verified tokens are cached by a hash of the token (bounded, never past `exp`), because signature checks
 * cost more CPU than anything else on the hot path. Each cache entry remembers the provider's version
 * (`updated_at`); the token endpoint reads the current version in the same query that loads the connection,
 * so a changed or deleted provider invalidates its cached verifications on the very next request.
 */
import { createHash } from 'node:crypto';
import { Inject, Injectable } from '@nestjs/common';
import { decodeJwt, decodeProtectedHeader, errors as joseErrors, jwtVerify } from 'jose';
import { textProblem, userIdSchema } from '../common/validation.js';
import {
  IdentityProvidersService,
  type IdentityProviderView,
} from '../identity/identity-providers.service.js';
import { JwksResolver, JwksUnavailableError } from './jwks-resolver.js';
import { CLOCK_TOLERANCE_S, FORBIDDEN_JWT_HEADERS } from './jwt-policy.js';

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
const IDP_CACHE_MS = 30_000;

interface CachedIdp {
  idp: IdentityProviderView | null;
  until: number;
}

export const idpVersion = (idp: { updatedAt: string } | { updated_at: Date }): number =>
  'updatedAt' in idp ? Date.parse(idp.updatedAt) : idp.updated_at.getTime();

@Injectable()
export class SubjectTokenVerifier {
  private readonly verified = new Map<string, VerifiedSubject & { tenantId: string }>();
  private readonly idps = new Map<string, CachedIdp>();
  /** Signature verifications performed (cache misses), for tests and benchmarks. */
  verifications = 0;

  constructor(
    @Inject(IdentityProvidersService) private readonly identityProviders: IdentityProvidersService,
    @Inject(JwksResolver) private readonly jwks: JwksResolver,
  ) {}

  async verify(tenantId: string, token: string): Promise<VerifiedSubject> {
    if (token.length > MAX_TOKEN_CHARS) throw new SubjectTokenError('malformed', 'subject_token is too long');
    const cacheKey = createHash('sha256').update(tenantId).update('\0').update(token).digest('base64url');
    const hit = this.verified.get(cacheKey);
    const now = Date.now();
    if (hit) {
      if (hit.expiresAt > now && hit.tenantId === tenantId) {
        // Refresh its place in the eviction order.
        this.verified.delete(cacheKey);
        this.verified.set(cacheKey, hit);
        return hit;
      }
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
    if (this.verified.size >= CACHE_MAX) this.verified.delete(this.verified.keys().next().value!);
    this.verified.set(cacheKey, { ...subject, tenantId });
    return subject;
  }

  /** Forgets cached verifications and provider settings of a tenant's issuer (the provider changed). */
  invalidateIssuer(tenantId: string, issuer: string): void {
    this.idps.delete(`${tenantId}\0${issuer}`);
    for (const [k, v] of this.verified)
      if (v.tenantId === tenantId && v.issuer === issuer) this.verified.delete(k);
  }

  private async verifyUncached(tenantId: string, token: string, fresh: boolean): Promise<VerifiedSubject> {
    let header: ReturnType<typeof decodeProtectedHeader>;
    let unverifiedIss: unknown;
    try {
      header = decodeProtectedHeader(token);
      unverifiedIss = decodeJwt(token).iss;
    } catch {
      throw new SubjectTokenError('malformed', 'subject_token is not a JWT');
    }
    if (typeof header.alg !== 'string' || header.alg.toLowerCase() === 'none') {
      throw new SubjectTokenError('alg_none', 'Unsigned tokens are not accepted');
    }
    const named = FORBIDDEN_JWT_HEADERS.find((h) => Object.hasOwn(header, h));
    if (named) {
      throw new SubjectTokenError('forbidden_header', `Tokens with a "${named}" header are not accepted`);
    }
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
    if (!(idp.algorithms as string[]).includes(header.alg)) {
      throw refuse(
        new SubjectTokenError('alg_not_allowed', `Algorithm ${header.alg} is not allowed for this issuer`),
      );
    }
    let payload: Awaited<ReturnType<typeof jwtVerify>>['payload'];
    try {
      this.verifications++;
      ({ payload } = await jwtVerify(token, this.jwks.keyGetter(idp), {
        algorithms: idp.algorithms,
        issuer: idp.issuer,
        audience: idp.audiences,
        requiredClaims: ['exp'],
        clockTolerance: CLOCK_TOLERANCE_S,
      }));
    } catch (err) {
      const e = verificationError(err);
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
    const hit = this.idps.get(key);
    if (!fresh && hit && hit.until > Date.now()) return { idp: hit.idp, cached: true };
    if (issuer.length > 2048) return { idp: null, cached: false };
    const idp = await this.identityProviders.findByIssuer(tenantId, issuer);
    // Unknown issuers are not cached: made-up issuers would otherwise crowd out real ones.
    if (idp) {
      if (this.idps.size >= 10_000) this.idps.delete(this.idps.keys().next().value!);
      this.idps.set(key, { idp, until: Date.now() + IDP_CACHE_MS });
    } else {
      this.idps.delete(key);
    }
    return { idp, cached: false };
  }
}

function verificationError(err: unknown): SubjectTokenError {
  if (err instanceof JwksUnavailableError) {
    return new SubjectTokenError('keys_unavailable', 'The issuer’s signing keys are unavailable', true);
  }
  if (err instanceof joseErrors.JWTExpired)
    return new SubjectTokenError('expired', 'subject_token has expired');
  if (err instanceof joseErrors.JWTClaimValidationFailed) {
    const claim = err.claim;
    if (claim === 'nbf') return new SubjectTokenError('not_yet_valid', 'subject_token is not valid yet');
    if (claim === 'aud')
      return new SubjectTokenError('wrong_audience', 'subject_token has the wrong audience');
    if (claim === 'iss') return new SubjectTokenError('wrong_issuer', 'subject_token has the wrong issuer');
    return new SubjectTokenError('invalid_claims', `subject_token claim "${claim}" is invalid`);
  }
  if (err instanceof joseErrors.JWKSNoMatchingKey) {
    return new SubjectTokenError('unknown_key', 'subject_token is signed by an unknown key');
  }
  if (err instanceof joseErrors.JWKSMultipleMatchingKeys) {
    return new SubjectTokenError('ambiguous_key', 'subject_token names no key and several match');
  }
  if (err instanceof joseErrors.JWSSignatureVerificationFailed) {
    return new SubjectTokenError('bad_signature', 'subject_token signature is invalid');
  }
  if (err instanceof joseErrors.JOSEAlgNotAllowed) {
    return new SubjectTokenError('alg_not_allowed', 'subject_token algorithm is not allowed');
  }
  return new SubjectTokenError('invalid', 'subject_token could not be verified');
}
