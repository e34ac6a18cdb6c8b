/**
 * The one check of a token issued by a tenant's identity provider, wherever Custos accepts one: a user's
 * subject token at the token endpoint, the ID token of the hosted connect sign-in. Refused before any key is
 * looked up: what is not a JWT, `alg: none`, and the FORBIDDEN_JWT_HEADERS (a token naming its own keys, or
 * demanding processing nobody here knows). Then the algorithm must be one the provider allows, and jose checks
 * the signature against the provider's keys, `iss`, `aud`, `exp` (required) and `nbf`.
 *
 * What a caller makes of the claims stays with the caller: the user claim and the verified-token cache at the
 * token endpoint, the nonce and the session's user in the connect sign-in. The keys come from the caller too
 * (JwksResolver, which lives with the token endpoint), and a failure of the key source itself is not a verdict
 * on the token: it reaches the caller unchanged.
 */
import {
  decodeJwt,
  decodeProtectedHeader,
  errors as joseErrors,
  jwtVerify,
  type JWTPayload,
  type JWTVerifyGetKey,
} from 'jose';
import { CLOCK_TOLERANCE_S, FORBIDDEN_JWT_HEADERS } from '../common/jwt-policy.js';

/** Why a token is refused: stable, for the callers' audit trails. */
export type IdpTokenRefusal =
  | 'malformed'
  | 'alg_none'
  | 'forbidden_header'
  | 'alg_not_allowed'
  | 'expired'
  | 'not_yet_valid'
  | 'wrong_audience'
  | 'wrong_issuer'
  | 'invalid_claims'
  | 'unknown_key'
  | 'ambiguous_key'
  | 'bad_signature'
  | 'invalid';

/** A refused token; `cause` is jose's error when jose refused it. */
export class IdpTokenError extends Error {
  constructor(
    readonly reason: IdpTokenRefusal,
    message: string,
    options?: ErrorOptions,
  ) {
    super(message, options);
    this.name = 'IdpTokenError';
  }
}

/** A token that passed the checks needing no key. */
export interface InspectedIdpToken {
  token: string;
  /** What the token is called in refusal messages (the token endpoint sends them as error_description). */
  label: string;
  alg: string;
  /** The `iss` claim, unverified: good for finding the provider, nothing else. */
  issuer: unknown;
}

export interface IdpTokenExpectations {
  /** The audience the token must name (one of them, for a list). */
  audience: string | string[];
  /** Claims that must be present besides `exp`. */
  requiredClaims?: string[];
}

/** The checks that need neither the provider nor its keys; throws IdpTokenError. */
export function inspectIdpToken(token: string, label: string): InspectedIdpToken {
  let header: ReturnType<typeof decodeProtectedHeader>;
  let issuer: unknown;
  try {
    header = decodeProtectedHeader(token);
    issuer = decodeJwt(token).iss;
  } catch {
    throw new IdpTokenError('malformed', `${label} is not a JWT`);
  }
  if (typeof header.alg !== 'string' || header.alg.toLowerCase() === 'none') {
    throw new IdpTokenError('alg_none', 'Unsigned tokens are not accepted');
  }
  const named = FORBIDDEN_JWT_HEADERS.find((h) => Object.hasOwn(header, h));
  if (named) {
    throw new IdpTokenError('forbidden_header', `Tokens with a "${named}" header are not accepted`);
  }
  return { token, label, alg: header.alg, issuer };
}

/**
 * The verified claims of an inspected token from `idp`, signed by one of its keys (`getKey`); throws
 * IdpTokenError, or the key source's own error.
 */
export async function verifyIdpToken(
  inspected: InspectedIdpToken,
  idp: { issuer: string; algorithms: string[] },
  getKey: JWTVerifyGetKey,
  expected: IdpTokenExpectations,
): Promise<JWTPayload> {
  const { token, label, alg } = inspected;
  if (!idp.algorithms.includes(alg)) {
    throw new IdpTokenError('alg_not_allowed', `Algorithm ${alg} is not allowed for this issuer`);
  }
  try {
    const { payload } = await jwtVerify(token, getKey, {
      algorithms: idp.algorithms,
      issuer: idp.issuer,
      audience: expected.audience,
      requiredClaims: ['exp', ...(expected.requiredClaims ?? [])],
      clockTolerance: CLOCK_TOLERANCE_S,
    });
    return payload;
  } catch (err) {
    if (!(err instanceof joseErrors.JOSEError)) throw err;
    throw refusal(err, label);
  }
}

function refusal(err: joseErrors.JOSEError, label: string): IdpTokenError {
  const refuse = (reason: IdpTokenRefusal, message: string) =>
    new IdpTokenError(reason, message, { cause: err });
  if (err instanceof joseErrors.JWTExpired) return refuse('expired', `${label} has expired`);
  if (err instanceof joseErrors.JWTClaimValidationFailed) {
    switch (err.claim) {
      case 'nbf':
        return refuse('not_yet_valid', `${label} is not valid yet`);
      case 'aud':
        return refuse('wrong_audience', `${label} has the wrong audience`);
      case 'iss':
        return refuse('wrong_issuer', `${label} has the wrong issuer`);
      default:
        return refuse('invalid_claims', `${label} claim "${err.claim}" is invalid`);
    }
  }
  if (err instanceof joseErrors.JWKSNoMatchingKey) {
    return refuse('unknown_key', `${label} is signed by an unknown key`);
  }
  if (err instanceof joseErrors.JWKSMultipleMatchingKeys) {
    return refuse('ambiguous_key', `${label} names no key and several match`);
  }
  if (err instanceof joseErrors.JWSSignatureVerificationFailed) {
    return refuse('bad_signature', `${label} signature is invalid`);
  }
  if (err instanceof joseErrors.JOSEAlgNotAllowed) {
    return refuse('alg_not_allowed', `${label} algorithm is not allowed`);
  }
  return refuse('invalid', `${label} could not be verified`);
}
