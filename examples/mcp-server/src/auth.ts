/**
 * This server as an OAuth 2.0 resource server: its protected-resource metadata (RFC 9728), the bearer
 * challenge (RFC 6750 with `resource_metadata`), and verification of the users' JWTs against the
 * authorization server's keys, found through its metadata (OpenID Connect Discovery or RFC 8414).
 */
import { createRemoteJWKSet, errors, jwtVerify, type JWTPayload } from 'jose';
import { isLoopbackHost, type ExampleConfig } from './config.js';

/** A caller whose token this server accepted. */
export interface AuthenticatedUser {
  /** The token's `sub`: the user, as the authorization server (and so Custos) names them. */
  subject: string;
  /** The bearer token as presented: sent on to Custos as the RFC 8693 subject_token, and nowhere else. */
  token: string;
  /** Seconds since the epoch. */
  expiresAt: number;
  scopes: string[];
  clientId: string;
}

/** The AuthInfo both SDKs hand to tool handlers (`extra.authInfo` in 1.x, `ctx.http.authInfo` in 2.x). */
export interface AuthInfoLike {
  token: string;
  clientId: string;
  scopes: string[];
  expiresAt?: number;
  extra?: Record<string, unknown>;
}

export function authInfoOf(user: AuthenticatedUser): AuthInfoLike {
  return {
    token: user.token,
    clientId: user.clientId,
    scopes: user.scopes,
    expiresAt: user.expiresAt,
    extra: { subject: user.subject },
  };
}

/** The verified user back from the AuthInfo this server attached to the request (undefined: none attached). */
export function userOf(info: AuthInfoLike | undefined): AuthenticatedUser | undefined {
  const subject = info?.extra?.subject;
  if (!info || typeof subject !== 'string') return undefined;
  return {
    subject,
    token: info.token,
    expiresAt: info.expiresAt ?? 0,
    scopes: info.scopes,
    clientId: info.clientId,
  };
}

/** Why a request is not let in: no token (a bare challenge), a bad one (`invalid_token`), or no way to tell. */
export class AuthError extends Error {
  override readonly name = 'AuthError';
  constructor(
    readonly kind: 'missing' | 'invalid_token' | 'unavailable',
    message: string,
  ) {
    super(message);
  }
}

const ASYMMETRIC_ALGS = [
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
  'Ed25519',
];
const DISCOVERY_TIMEOUT_MS = 5_000;
const MAX_METADATA_BYTES = 256 * 1024;
/** After a failed discovery, requests answer 503 for this long before the next attempt. */
const DISCOVERY_RETRY_MS = 5_000;

type KeySet = ReturnType<typeof createRemoteJWKSet>;

export class ResourceServerAuth {
  /** Where this server's RFC 9728 document is: the path-suffixed form for the resource `${publicUrl}/mcp`. */
  readonly metadataUrl: string;
  private keys: Promise<KeySet> | null = null;
  private failedAt = 0;

  constructor(private readonly config: ExampleConfig) {
    this.metadataUrl = `${config.publicUrl}/.well-known/oauth-protected-resource/mcp`;
  }

  /** The RFC 9728 protected-resource metadata document. */
  metadata(): Record<string, unknown> {
    return {
      resource: this.config.resource,
      authorization_servers: [this.config.authIssuer],
      bearer_methods_supported: ['header'],
      resource_name: 'Custos example MCP server',
    };
  }

  /** The WWW-Authenticate value for a 401: a bare challenge without a token, `invalid_token` with a bad one. */
  challenge(err?: AuthError): string {
    const params = [];
    if (err?.kind === 'invalid_token') {
      params.push('error="invalid_token"', `error_description="${err.message.replace(/["\\]/g, '')}"`);
    }
    params.push(`resource_metadata="${this.metadataUrl}"`);
    return `Bearer ${params.join(', ')}`;
  }

  /** Starts discovery ahead of the first request; a failure is retried by a later request. */
  warmUp(): Promise<void> {
    return this.keySet().then(() => undefined);
  }

  /** Verifies the Authorization header's bearer token; throws AuthError. */
  async verify(authorization: string | undefined): Promise<AuthenticatedUser> {
    if (!authorization) throw new AuthError('missing', 'No access token');
    const match = /^Bearer +([A-Za-z0-9\-._~+/]+=*) *$/i.exec(authorization);
    if (!match) throw new AuthError('invalid_token', 'Malformed Authorization header');
    const token = match[1];
    let keys: KeySet;
    try {
      keys = await this.keySet();
    } catch {
      throw new AuthError('unavailable', 'The authorization server’s keys are unavailable');
    }
    let payload: JWTPayload;
    try {
      ({ payload } = await jwtVerify(token, keys, {
        issuer: this.config.authIssuer,
        audience: this.config.authAudience,
        algorithms: ASYMMETRIC_ALGS,
        requiredClaims: ['exp', 'sub'],
        clockTolerance: 30,
      }));
    } catch (err) {
      throw this.refusal(err);
    }
    if (typeof payload.sub !== 'string' || payload.sub === '') {
      throw new AuthError('invalid_token', 'The access token names no subject');
    }
    const scope = (payload as { scope?: unknown }).scope;
    const clientId = (payload as { client_id?: unknown; azp?: unknown }).client_id ?? payload.azp;
    return {
      subject: payload.sub,
      token,
      expiresAt: payload.exp!,
      scopes: typeof scope === 'string' ? scope.split(' ').filter(Boolean) : [],
      clientId: typeof clientId === 'string' ? clientId : '',
    };
  }

  private refusal(err: unknown): AuthError {
    // The key set could not be had (network, timeout, an error page, not a key set): nothing is known about
    // the token, and a 401 would tell the client its token is bad.
    if (
      !(err instanceof errors.JOSEError) ||
      err.code === 'ERR_JOSE_GENERIC' ||
      err instanceof errors.JWKSTimeout ||
      err instanceof errors.JWKSInvalid
    ) {
      return new AuthError('unavailable', 'The authorization server’s keys are unavailable');
    }
    if (err instanceof errors.JWTExpired)
      return new AuthError('invalid_token', 'The access token has expired');
    if (err instanceof errors.JWTClaimValidationFailed) {
      if (err.claim === 'aud')
        return new AuthError('invalid_token', 'The access token is not for this server');
      if (err.claim === 'iss')
        return new AuthError('invalid_token', 'The access token is from another issuer');
      if (err.claim === 'nbf') return new AuthError('invalid_token', 'The access token is not yet valid');
    }
    return new AuthError('invalid_token', 'The access token is invalid');
  }

  private keySet(): Promise<KeySet> {
    if (this.keys === null) {
      if (Date.now() - this.failedAt < DISCOVERY_RETRY_MS) {
        return Promise.reject(new Error('discovery failed recently'));
      }
      this.keys = this.discover().catch((err: unknown) => {
        this.keys = null;
        this.failedAt = Date.now();
        throw err;
      });
    }
    return this.keys;
  }

  /** Finds the issuer's jwks_uri: OpenID Connect Discovery first, then RFC 8414's well-known location. */
  private async discover(): Promise<KeySet> {
    const issuer = new URL(this.config.authIssuer);
    const path = issuer.pathname.replace(/\/$/, '');
    const candidates = [
      `${issuer.origin}${path}/.well-known/openid-configuration`,
      `${issuer.origin}/.well-known/oauth-authorization-server${path}`,
    ];
    let lastError: unknown = new Error('no metadata');
    for (const candidate of candidates) {
      try {
        const doc = await fetchJson(candidate);
        // RFC 8414 §3.3 / OIDC Discovery §4.3: the document must name exactly the issuer it was fetched for.
        if (doc.issuer !== this.config.authIssuer) {
          throw new Error(`metadata at ${candidate} names another issuer`);
        }
        if (typeof doc.jwks_uri !== 'string') throw new Error(`metadata at ${candidate} has no jwks_uri`);
        const jwksUri = new URL(doc.jwks_uri);
        if (
          jwksUri.protocol !== 'https:' &&
          !(jwksUri.protocol === 'http:' && isLoopbackHost(jwksUri.hostname))
        ) {
          throw new Error('jwks_uri must use https');
        }
        return createRemoteJWKSet(jwksUri, {
          timeoutDuration: DISCOVERY_TIMEOUT_MS,
          cooldownDuration: 30_000,
        });
      } catch (err) {
        lastError = err;
      }
    }
    throw lastError;
  }
}

/** GET a JSON object, with a timeout, no redirects and a size cap. */
async function fetchJson(url: string): Promise<Record<string, unknown>> {
  const res = await fetch(url, {
    headers: { accept: 'application/json' },
    redirect: 'error',
    signal: AbortSignal.timeout(DISCOVERY_TIMEOUT_MS),
  });
  if (!res.ok) {
    await res.body?.cancel();
    throw new Error(`${url} answered HTTP ${res.status}`);
  }
  const text = await readCapped(res, MAX_METADATA_BYTES);
  const doc = JSON.parse(text) as unknown;
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc))
    throw new Error(`${url} is not a JSON object`);
  return doc as Record<string, unknown>;
}

/** A response body as text, refusing one over `limit` bytes. */
export async function readCapped(res: Response, limit: number): Promise<string> {
  if (!res.body) return '';
  const reader: ReadableStreamDefaultReader<Uint8Array> = res.body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > limit) {
      await reader.cancel();
      throw new Error(`response over ${limit} bytes`);
    }
    chunks.push(value);
  }
  return Buffer.concat(chunks).toString('utf8');
}
