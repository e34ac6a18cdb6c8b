/**
 * Connector client authentication at the token endpoint: `client_secret_basic` (RFC 6749 §2.3.1: id and
 * secret form-urlencoded, then base64) or `private_key_jwt` (RFC 7523: a JWT signed by the connector's key
 * with `iss` = `sub` = client id, `aud` = the token endpoint, a short `exp` and a `jti` that is accepted
 * once). Exactly one method per request.
 *
 * Connector registrations are cached for a short time; the caller re-reads the connector's version and
 * state in the same query that loads the credential, so a disabled connector, a rotated secret or a changed
 * policy takes effect on the next request on every replica. Single use of `jti` is enforced in PostgreSQL by
 * the caller (see `UsedAssertions`), so it holds across replicas.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { Inject, Injectable } from '@nestjs/common';
import { decodeJwt, decodeProtectedHeader, errors as joseErrors, jwtVerify } from 'jose';
import { LRUCache } from 'lru-cache';
import { textProblem } from '../common/validation.js';
import { CONFIG, type Config } from '../config/config.js';
import { hashKey } from './admin-keys.service.js';
import { ConnectorsService, type ConnectorCredentials } from './connectors.service.js';
import { SIGNING_ALGORITHMS } from '../common/jwt-policy.js';
import { JwksResolver, JwksUnavailableError } from './jwks-resolver.js';
import { CLOCK_TOLERANCE_S, FORBIDDEN_JWT_HEADERS } from '../common/jwt-policy.js';

export const CLIENT_ASSERTION_TYPE = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer';
/** The longest an assertion may live (exp - now), so a captured one is useless soon. */
export const MAX_ASSERTION_LIFETIME_S = 300;
const CACHE_MS = 30_000;
const CACHE_MAX = 10_000;

export type ClientAuthMethod = 'client_secret_basic' | 'private_key_jwt';

export interface AuthenticatedClient {
  connector: ConnectorCredentials;
  method: ClientAuthMethod;
  /** For private_key_jwt: the assertion's id and expiry, to be recorded as used. */
  assertion: { jtiHash: Buffer; expiresAt: Date } | null;
}

/** Authentication failed; `reason` is stable (for audit), the client only ever sees invalid_client. */
export class ClientAuthError extends Error {
  constructor(
    readonly reason: string,
    /** The connector the request claimed to be, when known (its tenant gets the audit event). */
    readonly connector: ConnectorCredentials | null,
    /** The request used HTTP Basic (the 401 then carries a Basic challenge). */
    readonly basic: boolean,
    /** Two methods or a malformed request rather than bad credentials: invalid_request. */
    readonly malformed = false,
    /** The connector's key set could not be fetched: a 503, not the client's fault. */
    readonly unavailable = false,
  ) {
    super(`Client authentication failed: ${reason}`);
    this.name = 'ClientAuthError';
  }
}

export interface ClientAuthInput {
  authorization: string | undefined;
  clientId: string | undefined;
  clientSecret: string | undefined;
  clientAssertion: string | undefined;
  clientAssertionType: string | undefined;
}

/** RFC 6749 §2.3.1 / Appendix B: the id and secret are form-urlencoded before base64. */
export function parseBasicAuth(header: string): { clientId: string; secret: string } | null {
  const m = /^Basic ([A-Za-z0-9+/]+={0,2})$/i.exec(header.trim());
  if (!m) return null;
  const decoded = Buffer.from(m[1], 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  if (colon < 0) return null;
  try {
    const formDecode = (s: string) => decodeURIComponent(s.replace(/\+/g, ' '));
    return { clientId: formDecode(decoded.slice(0, colon)), secret: formDecode(decoded.slice(colon + 1)) };
  } catch {
    return null;
  }
}

@Injectable()
export class ClientAuthenticator {
  /**
   * Known registrations by client id, least recently used first out. `ttlResolution: 0` reads the clock on
   * each lookup instead of arming a timer to cache it, which would cost the token endpoint a timer per
   * millisecond of traffic.
   */
  private readonly cache = new LRUCache<string, ConnectorCredentials>({
    max: CACHE_MAX,
    ttl: CACHE_MS,
    ttlResolution: 0,
  });

  constructor(
    @Inject(ConnectorsService) private readonly connectors: ConnectorsService,
    @Inject(JwksResolver) private readonly jwks: JwksResolver,
    @Inject(CONFIG) private readonly config: Config,
  ) {}

  /** The audiences a client assertion may name: the token endpoint URL, or Custos's issuer URL. */
  get assertionAudiences(): string[] {
    return [`${this.config.publicUrl}/oauth/token`, this.config.publicUrl];
  }

  async authenticate(input: ClientAuthInput): Promise<AuthenticatedClient> {
    const basic = input.authorization !== undefined && /^Basic /i.test(input.authorization);
    const assertion = input.clientAssertion !== undefined || input.clientAssertionType !== undefined;
    if (basic && assertion) throw new ClientAuthError('multiple_methods', null, basic, true);
    if (input.clientSecret !== undefined) {
      throw new ClientAuthError('unsupported_method', null, basic, basic || assertion);
    }
    if (basic) return this.viaSecret(input.authorization!, input.clientId);
    if (assertion) return this.viaAssertion(input);
    throw new ClientAuthError('missing', null, false);
  }

  /** Drops a cached registration (the token endpoint saw a newer version). */
  forget(clientId: string): void {
    this.cache.delete(clientId);
  }

  private async load(clientId: string, fresh = false): Promise<ConnectorCredentials | null> {
    const hit = fresh ? undefined : this.cache.get(clientId);
    // A disabled registration is never served from the cache: it may have been enabled since.
    if (hit && !hit.disabled) return hit;
    const creds = await this.connectors.credentialsByClientId(clientId);
    // Unknown ids are not cached: they would let a flood of made-up ids push out real ones.
    if (creds) this.cache.set(clientId, creds);
    return creds;
  }

  private async viaSecret(header: string, formClientId: string | undefined): Promise<AuthenticatedClient> {
    const parsed = parseBasicAuth(header);
    if (!parsed) throw new ClientAuthError('malformed_basic', null, true);
    if (formClientId !== undefined && formClientId !== parsed.clientId) {
      throw new ClientAuthError('client_id_mismatch', null, true, true);
    }
    // No such id can exist; refused before it reaches a lookup or the cache.
    if (parsed.clientId.length > 64 || textProblem(parsed.clientId) !== null) {
      throw new ClientAuthError('unknown_client', null, true);
    }
    const digest = hashKey(parsed.secret);
    const matches = (c: ConnectorCredentials) =>
      c.secretHash !== null && c.secretHash.length === digest.length && timingSafeEqual(c.secretHash, digest);
    let creds = await this.load(parsed.clientId);
    // A secret that does not match the cached hash may be a freshly rotated one: check the database.
    if (creds && !matches(creds)) creds = await this.load(parsed.clientId, true);
    if (!creds) throw new ClientAuthError('unknown_client', null, true);
    if (creds.authMethod !== 'client_secret_basic') throw new ClientAuthError('wrong_method', creds, true);
    if (!matches(creds)) throw new ClientAuthError('bad_secret', creds, true);
    if (creds.disabled) throw new ClientAuthError('disabled', creds, true);
    return { connector: creds, method: 'client_secret_basic', assertion: null };
  }

  private async viaAssertion(input: ClientAuthInput): Promise<AuthenticatedClient> {
    if (input.clientAssertionType !== CLIENT_ASSERTION_TYPE || !input.clientAssertion) {
      throw new ClientAuthError('bad_assertion_type', null, false, true);
    }
    const jwt = input.clientAssertion;
    let iss: unknown;
    let header: ReturnType<typeof decodeProtectedHeader>;
    try {
      header = decodeProtectedHeader(jwt);
      iss = decodeJwt(jwt).iss;
    } catch {
      throw new ClientAuthError('malformed_assertion', null, false);
    }
    if (typeof iss !== 'string' || iss.length > 64 || textProblem(iss) !== null) {
      throw new ClientAuthError('unknown_client', null, false);
    }
    if (input.clientId !== undefined && input.clientId !== iss) {
      throw new ClientAuthError('client_id_mismatch', null, false, true);
    }
    const creds = await this.load(iss);
    if (!creds) throw new ClientAuthError('unknown_client', null, false);
    if (creds.authMethod !== 'private_key_jwt') throw new ClientAuthError('wrong_method', creds, false);
    if (typeof header.alg !== 'string' || !(SIGNING_ALGORITHMS as readonly string[]).includes(header.alg)) {
      throw new ClientAuthError('alg_not_allowed', creds, false);
    }
    if (FORBIDDEN_JWT_HEADERS.some((h) => Object.hasOwn(header, h))) {
      throw new ClientAuthError('forbidden_header', creds, false);
    }
    let payload: Awaited<ReturnType<typeof jwtVerify>>['payload'];
    try {
      ({ payload } = await jwtVerify(jwt, this.jwks.keyGetter(creds), {
        algorithms: [...SIGNING_ALGORITHMS],
        issuer: creds.clientId,
        subject: creds.clientId,
        audience: this.assertionAudiences,
        requiredClaims: ['exp', 'jti'],
        clockTolerance: CLOCK_TOLERANCE_S,
      }));
    } catch (err) {
      if (err instanceof JwksUnavailableError) {
        throw new ClientAuthError('keys_unavailable', creds, false, false, true);
      }
      throw new ClientAuthError(assertionFailure(err), creds, false);
    }
    const exp = payload.exp as number;
    if (exp - Date.now() / 1000 > MAX_ASSERTION_LIFETIME_S + CLOCK_TOLERANCE_S) {
      throw new ClientAuthError('assertion_lifetime_too_long', creds, false);
    }
    if (typeof payload.jti !== 'string' || payload.jti.length === 0 || payload.jti.length > 256) {
      throw new ClientAuthError('bad_jti', creds, false);
    }
    if (creds.disabled) throw new ClientAuthError('disabled', creds, false);
    return {
      connector: creds,
      method: 'private_key_jwt',
      assertion: {
        jtiHash: createHash('sha256').update(payload.jti).digest(),
        // Kept until the assertion could no longer be accepted anyway.
        expiresAt: new Date((exp + CLOCK_TOLERANCE_S) * 1000),
      },
    };
  }
}

function assertionFailure(err: unknown): string {
  if (err instanceof joseErrors.JWTExpired) return 'assertion_expired';
  if (err instanceof joseErrors.JWTClaimValidationFailed) return `assertion_bad_${err.claim}`;
  if (err instanceof joseErrors.JWKSNoMatchingKey) return 'unknown_key';
  if (err instanceof joseErrors.JWSSignatureVerificationFailed) return 'bad_signature';
  if (err instanceof joseErrors.JOSEAlgNotAllowed) return 'alg_not_allowed';
  return 'invalid_assertion';
}
