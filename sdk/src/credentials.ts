/**
 * The connector's client authentication: `client_secret_basic` (RFC 6749 §2.3.1: id and secret
 * form-urlencoded, then base64) or `private_key_jwt` (RFC 7523: a fresh assertion for every request, signed
 * with the connector's key, `iss` = `sub` = client id, `aud` = Custos's token endpoint, a random `jti` and a
 * 60-second lifetime). At the token endpoint the assertion goes in the form; on Custos's tenant API (connect
 * sessions) it is sent as `Authorization: Bearer <assertion>`, with the same audience.
 */
import { createPrivateKey, KeyObject, randomUUID } from 'node:crypto';
import { types } from 'node:util';
import { SignJWT, type CryptoKey, type JWK } from 'jose';
import { CustosError } from './errors.js';

/**
 * The connector's private key: a WebCrypto `CryptoKey`, a Node `KeyObject`, a private JWK, or a PKCS#8 / SEC1
 * / PKCS#1 PEM string.
 */
export type PrivateKeyInput = CryptoKey | KeyObject | JWK | string;

export const CLIENT_ASSERTION_TYPE = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer';
/** How long an assertion lives; Custos accepts at most five minutes. */
const ASSERTION_LIFETIME_S = 60;

/** The JWS algorithms Custos accepts for client assertions (asymmetric only). */
const ALGORITHMS = [
  'RS256',
  'RS384',
  'RS512',
  'PS256',
  'PS384',
  'PS512',
  'ES256',
  'ES384',
  'ES512',
  'EdDSA',
] as const;

const invalid = (message: string) => new CustosError('invalid_argument', message);

const RSA_ALGORITHMS = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512'];
const EC_ALGORITHMS: Record<string, string> = {
  'P-256': 'ES256',
  prime256v1: 'ES256',
  'P-384': 'ES384',
  secp384r1: 'ES384',
  'P-521': 'ES512',
  secp521r1: 'ES512',
};
const SHA_BITS: Record<string, string> = { 'SHA-256': '256', 'SHA-384': '384', 'SHA-512': '512' };

type SigningKey = CryptoKey | KeyObject | JWK;

/** The algorithms a key can sign with, the default first; empty when Custos would accept none of them. */
function algorithmsFor(key: SigningKey): string[] {
  if (types.isCryptoKey(key)) {
    const k = key as unknown as {
      type: string;
      usages: string[];
      algorithm: { name: string; namedCurve?: string; hash?: { name: string } };
    };
    if (k.type !== 'private' || !k.usages.includes('sign')) {
      throw invalid('privateKey must be a private CryptoKey usable for signing');
    }
    const { name, namedCurve, hash } = k.algorithm;
    if (name === 'ECDSA') return namedCurve && EC_ALGORITHMS[namedCurve] ? [EC_ALGORITHMS[namedCurve]] : [];
    if (name === 'RSASSA-PKCS1-v1_5' && hash && SHA_BITS[hash.name]) return [`RS${SHA_BITS[hash.name]}`];
    if (name === 'RSA-PSS' && hash && SHA_BITS[hash.name]) return [`PS${SHA_BITS[hash.name]}`];
    if (name === 'Ed25519') return ['EdDSA'];
    return [];
  }
  if (key instanceof KeyObject) {
    if (key.type !== 'private') throw invalid('privateKey must be a private key');
    const curve = key.asymmetricKeyDetails?.namedCurve;
    switch (key.asymmetricKeyType) {
      case 'ec':
        return curve && EC_ALGORITHMS[curve] ? [EC_ALGORITHMS[curve]] : [];
      case 'rsa':
        return RSA_ALGORITHMS;
      case 'rsa-pss':
        return RSA_ALGORITHMS.filter((a) => a.startsWith('PS'));
      case 'ed25519':
        return ['EdDSA'];
      case 'dsa':
      case 'ed448':
      case 'x25519':
      case 'x448':
      case undefined:
        return [];
    }
  }
  const jwk = key;
  if (typeof jwk.d !== 'string') throw invalid('privateKey must be a private JWK (with "d")');
  let algorithms: string[] = [];
  if (jwk.kty === 'EC' && jwk.crv && EC_ALGORITHMS[jwk.crv]) algorithms = [EC_ALGORITHMS[jwk.crv]];
  else if (jwk.kty === 'RSA') algorithms = RSA_ALGORITHMS;
  else if (jwk.kty === 'OKP' && jwk.crv === 'Ed25519') algorithms = ['EdDSA'];
  // A JWK that names its algorithm signs with that one only.
  if (typeof jwk.alg === 'string') return algorithms.includes(jwk.alg) ? [jwk.alg] : [];
  return algorithms;
}

function toSigningKey(input: PrivateKeyInput): SigningKey {
  if (typeof input === 'string') {
    try {
      return createPrivateKey({ key: input, format: 'pem' });
    } catch {
      // The key's text never goes into the message.
      throw invalid('privateKey is not a readable private key in PEM');
    }
  }
  if (typeof input !== 'object' || input === null) {
    throw invalid('privateKey must be a CryptoKey, KeyObject, private JWK or PEM string');
  }
  return input;
}

export interface CredentialOptions {
  clientId: string;
  clientSecret?: string;
  privateKey?: PrivateKeyInput;
  keyId?: string;
  algorithm?: string;
}

/** What a request to the token endpoint carries for client authentication. */
export interface TokenEndpointAuth {
  headers: Record<string, string>;
  params: Record<string, string>;
}

export class ClientCredentials {
  readonly #clientId: string;
  readonly #basic: string | null;
  readonly #key: { key: SigningKey; alg: string; kid?: string } | null;

  /** Validates the options (synchronously, before any I/O). */
  constructor(options: CredentialOptions) {
    const { clientId, clientSecret, privateKey, keyId, algorithm } = options;
    if ((clientSecret === undefined) === (privateKey === undefined)) {
      throw invalid('Give exactly one of clientSecret and privateKey');
    }
    this.#clientId = clientId;
    if (clientSecret !== undefined) {
      if (typeof clientSecret !== 'string' || clientSecret.length === 0) {
        throw invalid('clientSecret must be a non-empty string');
      }
      if (keyId !== undefined || algorithm !== undefined) {
        throw invalid('keyId and algorithm apply to privateKey only');
      }
      this.#basic =
        'Basic ' + Buffer.from(`${formEncode(clientId)}:${formEncode(clientSecret)}`).toString('base64');
      this.#key = null;
      return;
    }
    const key = toSigningKey(privateKey!);
    const usable = algorithmsFor(key).filter((a) => (ALGORITHMS as readonly string[]).includes(a));
    if (usable.length === 0) {
      throw invalid(`privateKey is not a key type Custos accepts (${ALGORITHMS.join(', ')})`);
    }
    if (algorithm !== undefined && !usable.includes(algorithm)) {
      throw invalid(`algorithm must be one this key signs with: ${usable.join(', ')}`);
    }
    if (keyId !== undefined && (typeof keyId !== 'string' || keyId.length === 0)) {
      throw invalid('keyId must be a non-empty string');
    }
    const jwkKid = !types.isCryptoKey(key) && !(key instanceof KeyObject) ? key.kid : undefined;
    const kid = keyId ?? (typeof jwkKid === 'string' ? jwkKid : undefined);
    this.#basic = null;
    this.#key = { key, alg: algorithm ?? usable[0], ...(kid !== undefined && { kid }) };
  }

  get method(): 'client_secret_basic' | 'private_key_jwt' {
    return this.#basic !== null ? 'client_secret_basic' : 'private_key_jwt';
  }

  /** Headers and form parameters for one token request (a fresh assertion each time). */
  async forTokenEndpoint(audience: string): Promise<TokenEndpointAuth> {
    if (this.#basic !== null) return { headers: { authorization: this.#basic }, params: {} };
    return {
      headers: {},
      params: {
        client_assertion_type: CLIENT_ASSERTION_TYPE,
        client_assertion: await this.assertion(audience),
      },
    };
  }

  /** The Authorization header for one request to Custos's tenant API. */
  async authorization(audience: string): Promise<string> {
    if (this.#basic !== null) return this.#basic;
    return `Bearer ${await this.assertion(audience)}`;
  }

  private async assertion(audience: string): Promise<string> {
    const { key, alg, kid } = this.#key!;
    const now = Math.floor(Date.now() / 1000);
    try {
      return await new SignJWT({})
        .setProtectedHeader({ alg, ...(kid !== undefined && { kid }) })
        .setIssuer(this.#clientId)
        .setSubject(this.#clientId)
        .setAudience(audience)
        .setJti(randomUUID())
        .setIssuedAt(now)
        .setExpirationTime(now + ASSERTION_LIFETIME_S)
        .sign(key);
    } catch (err) {
      const name = err instanceof Error ? err.name : 'Error';
      throw new CustosError(
        'signing_failed',
        `The client assertion could not be signed with ${alg} (${name})`,
        {
          cause: err,
        },
      );
    }
  }
}

/** application/x-www-form-urlencoded, as RFC 6749 Appendix B asks for the parts of Basic credentials. */
function formEncode(value: string): string {
  return new URLSearchParams([['', value]]).toString().slice(1);
}
