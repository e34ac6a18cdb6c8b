/**
 * The check of a provider's ID token in the connect flow, before its `sub` becomes the connection's provider
 * account id: signature against the provider's JWK Set (fetched through the SSRF-safe client by
 * JwksResolver), asymmetric algorithms only, `iss` = the definition's issuer, `aud` = the tenant app's client
 * id (with `azp` when there are several audiences), `exp`/`iat`, and the nonce bound to this flow.
 */
import { decodeProtectedHeader, errors as joseErrors, jwtVerify, type JWTVerifyGetKey } from 'jose';
import { JwksUnavailableError } from '../identity/jwks-resolver.js';
import { CLOCK_TOLERANCE_S, FORBIDDEN_JWT_HEADERS } from '../common/jwt-policy.js';
import { textProblem } from '../common/validation.js';
import { SIGNING_ALGORITHMS } from '../common/jwt-policy.js';

/** Which check an ID token failed: recorded in the audit event, never shown with the token. */
export type IdTokenCheck =
  | 'missing'
  | 'format'
  | 'header'
  | 'alg'
  | 'key'
  | 'signature'
  | 'iss'
  | 'aud'
  | 'azp'
  | 'exp'
  | 'nonce'
  | 'sub'
  | 'claims'
  | 'keys_unavailable';

export class IdTokenRejected extends Error {
  constructor(readonly check: IdTokenCheck) {
    super(`ID token refused (${check})`);
    this.name = 'IdTokenRejected';
  }

  /** The audit reason: a bad token, or keys that could not be fetched (the provider's outage, not an attack). */
  get reason(): 'id_token_invalid' | 'id_token_keys_unavailable' {
    return this.check === 'keys_unavailable' ? 'id_token_keys_unavailable' : 'id_token_invalid';
  }
}

export interface IdTokenExpectations {
  issuer: string;
  clientId: string;
  nonce: string;
}

/** The verified `sub` of `idToken`; throws IdTokenRejected naming the failed check. */
export async function verifyProviderIdToken(
  idToken: string | null,
  expected: IdTokenExpectations,
  getKey: JWTVerifyGetKey,
): Promise<string> {
  if (!idToken) throw new IdTokenRejected('missing');
  let header: ReturnType<typeof decodeProtectedHeader>;
  try {
    header = decodeProtectedHeader(idToken);
  } catch {
    throw new IdTokenRejected('format');
  }
  // A token naming its own keys (jku, x5u, jwk, x5c) or demanding unknown processing (crit) is refused as
  // the token endpoint refuses it; jose would ignore the first ones, but nothing here should rely on that.
  if (FORBIDDEN_JWT_HEADERS.some((h) => h in header)) throw new IdTokenRejected('header');
  let payload: Awaited<ReturnType<typeof jwtVerify>>['payload'];
  try {
    ({ payload } = await jwtVerify(idToken, getKey, {
      issuer: expected.issuer,
      audience: expected.clientId,
      // Asymmetric only: no `none`, and no HMAC keyed with a public key.
      algorithms: [...SIGNING_ALGORITHMS],
      clockTolerance: CLOCK_TOLERANCE_S,
      requiredClaims: ['iss', 'aud', 'exp', 'iat', 'sub', 'nonce'],
    }));
  } catch (err) {
    throw new IdTokenRejected(checkOf(err));
  }
  if (payload.nonce !== expected.nonce) throw new IdTokenRejected('nonce');
  // OpenID Connect Core §3.1.3.7: with several audiences, the token must say it was issued to this client.
  if (Array.isArray(payload.aud) && payload.aud.length > 1 && payload.azp !== expected.clientId) {
    throw new IdTokenRejected('azp');
  }
  const sub = payload.sub;
  if (typeof sub !== 'string' || sub.length === 0 || sub.length > 255 || textProblem(sub) !== null) {
    throw new IdTokenRejected('sub');
  }
  return sub;
}

function checkOf(err: unknown): IdTokenCheck {
  if (err instanceof JwksUnavailableError) return 'keys_unavailable';
  if (err instanceof joseErrors.JWSSignatureVerificationFailed) return 'signature';
  if (err instanceof joseErrors.JOSEAlgNotAllowed) return 'alg';
  if (err instanceof joseErrors.JWKSNoMatchingKey || err instanceof joseErrors.JWKSMultipleMatchingKeys) {
    return 'key';
  }
  if (err instanceof joseErrors.JWTExpired) return 'exp';
  if (err instanceof joseErrors.JWTClaimValidationFailed) {
    switch (err.claim) {
      case 'iss':
        return 'iss';
      case 'aud':
        return 'aud';
      case 'sub':
        return 'sub';
      case 'nonce':
        return 'nonce';
      default:
        return 'claims';
    }
  }
  return 'format';
}
