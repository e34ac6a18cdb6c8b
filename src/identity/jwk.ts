/**
 * The one check for keys a tenant registers (connector keys, identity-provider keys): public signing keys
 * only. A registration that carries private key material is refused outright rather than stripped, because
 * the sender has already leaked it and should know.
 */
import { createPublicKey, type JsonWebKey } from 'node:crypto';
import { z } from 'zod';
import { SIGNING_ALGORITHMS, type SigningAlgorithm } from '../common/jwt-policy.js';
import { textProblem } from '../common/validation.js';

export const MAX_JWKS_KEYS = 10;
const MAX_JWKS_JSON_CHARS = 64 * 1024;
const MIN_RSA_BITS = 2048;

/** Members that only a private (or symmetric) JWK has, RFC 7518 §6.2.2, §6.3.2 and §6.4. */
const PRIVATE_MEMBERS = ['d', 'p', 'q', 'dp', 'dq', 'qi', 'oth', 'k'] as const;

const CURVES: Record<'EC' | 'OKP', readonly string[]> = {
  EC: ['P-256', 'P-384', 'P-521'],
  OKP: ['Ed25519', 'Ed448'],
};

/** Whether a key of this type and curve can verify `alg` (RSA for RSxxx and PSxxx, the named curve for ESxxx). */
function algFits(alg: SigningAlgorithm, kty: string, crv: unknown): boolean {
  switch (alg) {
    case 'RS256':
    case 'RS384':
    case 'RS512':
    case 'PS256':
    case 'PS384':
    case 'PS512':
      return kty === 'RSA';
    case 'ES256':
      return kty === 'EC' && crv === 'P-256';
    case 'ES384':
      return kty === 'EC' && crv === 'P-384';
    case 'ES512':
      return kty === 'EC' && crv === 'P-521';
    case 'EdDSA':
      return kty === 'OKP';
  }
}

export interface PublicJwk {
  kty: 'RSA' | 'EC' | 'OKP';
  kid?: string;
  alg?: SigningAlgorithm;
  [member: string]: unknown;
}

export interface PublicJwks {
  keys: PublicJwk[];
}

const isSigningAlgorithm = (v: unknown): v is SigningAlgorithm =>
  typeof v === 'string' && (SIGNING_ALGORITHMS as readonly string[]).includes(v);

/**
 * Why `jwk` is not a public signing key Custos accepts, or null when it is. The answer names members,
 * never their values, so it is safe to return to the caller and to log.
 */
export function publicJwkProblem(jwk: unknown): string | null {
  if (typeof jwk !== 'object' || jwk === null || Array.isArray(jwk)) return 'must be a JSON object';
  const k = jwk as Record<string, unknown>;
  const secret = PRIVATE_MEMBERS.find((m) => Object.hasOwn(k, m));
  if (secret !== undefined)
    return `must be a public key: private member "${secret}" is not allowed (register the public key only)`;
  const kty = k.kty;
  if (kty !== 'RSA' && kty !== 'EC' && kty !== 'OKP') return 'kty must be one of RSA, EC, OKP';
  if (kty !== 'RSA' && !CURVES[kty].includes(String(k.crv)))
    return `crv must be one of ${CURVES[kty].join(', ')} for kty ${kty}`;
  if (k.use !== undefined && k.use !== 'sig') return 'use must be "sig"';
  if (k.key_ops !== undefined && !(Array.isArray(k.key_ops) && k.key_ops.every((op) => op === 'verify')))
    return 'key_ops may only contain "verify"';
  if (k.alg !== undefined) {
    if (!isSigningAlgorithm(k.alg)) return `alg must be one of ${SIGNING_ALGORITHMS.join(', ')}`;
    if (!algFits(k.alg, kty, k.crv)) return `alg ${k.alg} does not fit this ${kty} key`;
  }
  if (k.kid !== undefined && (typeof k.kid !== 'string' || k.kid.length === 0 || k.kid.length > 256))
    return 'kid must be a string of 1 to 256 characters';
  // The kid is matched against tokens' headers and shown in audit details.
  if (k.kid !== undefined && textProblem(k.kid) !== null) return `kid ${textProblem(k.kid)}`;
  let bits: number | undefined;
  try {
    bits = createPublicKey({ key: k as JsonWebKey, format: 'jwk' }).asymmetricKeyDetails?.modulusLength;
  } catch {
    return 'is not a valid public key';
  }
  if (kty === 'RSA' && (bits ?? 0) < MIN_RSA_BITS) return `RSA keys must have at least ${MIN_RSA_BITS} bits`;
  return null;
}

/** A JWK Set of 1 to MAX_JWKS_KEYS public signing keys with distinct `kid`s. */
export const publicJwksSchema = z
  .strictObject({
    keys: z.array(z.record(z.string(), z.unknown())).min(1).max(MAX_JWKS_KEYS),
  })
  .superRefine((jwks, ctx) => {
    if (JSON.stringify(jwks).length > MAX_JWKS_JSON_CHARS) {
      ctx.addIssue({ code: 'custom', message: `must be at most ${MAX_JWKS_JSON_CHARS} characters of JSON` });
      return;
    }
    const kids = new Set<unknown>();
    jwks.keys.forEach((key, i) => {
      const problem = publicJwkProblem(key);
      if (problem !== null) ctx.addIssue({ code: 'custom', path: ['keys', i], message: problem });
      if (key.kid !== undefined) {
        if (kids.has(key.kid))
          ctx.addIssue({ code: 'custom', path: ['keys', i, 'kid'], message: 'kid must be unique' });
        kids.add(key.kid);
      }
    });
  });

/** The key ids of a registered JWK Set, for audit details (keys themselves are public but bulky). */
export function jwksSummary(jwks: PublicJwks): { keyCount: number; kids: string[] } {
  return { keyCount: jwks.keys.length, kids: jwks.keys.flatMap((k) => (k.kid ? [k.kid] : [])) };
}
