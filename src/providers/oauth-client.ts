/**
 * The OAuth client side of the connect flow, on openid-client: authorization URLs with PKCE (S256), state
 * and nonce, and the code exchange with the tenant's own app credentials. Every request to the provider goes
 * through the SSRF-safe client (customFetch), so a provider URL that resolves to a private address, or
 * redirects to one, is refused at use as well as at save.
 */
import { Inject, Injectable } from '@nestjs/common';
import { importJWK, type CryptoKey, type JWK } from 'jose';
import * as oidc from 'openid-client';
import { CONFIG, type Config } from '../config/config.js';
import { CommonException, CustosException } from '../common/errors.js';
import { OutboundHttpClient } from '../common/outbound-http.js';
import { SIGNING_ALGORITHMS } from '../common/jwt-policy.js';
import type { OpenedProviderApp } from './provider-apps.service.js';
import type { ProviderDefinition } from './provider-definition.js';
import { ProviderException } from './providers.errors.js';

export interface TokenSet {
  accessToken: string;
  refreshToken: string | null;
  expiresAt: Date | null;
  scopes: string[];
  /**
   * The ID token as received, for the caller to verify (provider-id-token.ts) before reading anything in it:
   * openid-client checks its claims here, but not its signature.
   */
  idToken: string | null;
}

type OAuth2Config = NonNullable<ProviderDefinition['oauth2']>;

@Injectable()
export class ProviderOAuthClient {
  constructor(
    @Inject(OutboundHttpClient) private readonly outbound: OutboundHttpClient,
    @Inject(CONFIG) private readonly config: Config,
  ) {}

  redirectUri(provider: string): string {
    return `${this.config.publicUrl}/connect/callback/${provider}`;
  }

  /** The authorization URL, with a fresh PKCE verifier, state and (for OpenID scopes) nonce. */
  async authorizationUrl(
    definition: ProviderDefinition,
    app: OpenedProviderApp,
    scopes: string[],
  ): Promise<{ url: string; state: string; codeVerifier: string | null; nonce: string | null }> {
    const o = oauth2(definition);
    const cfg = await this.configuration(definition, app);
    const state = oidc.randomState();
    const codeVerifier = o.pkce ? oidc.randomPKCECodeVerifier() : null;
    const nonce = scopes.includes('openid') ? oidc.randomNonce() : null;
    const params: Record<string, string> = {
      ...o.authorizationParams,
      redirect_uri: this.redirectUri(definition.key),
      response_type: 'code',
      state,
    };
    if (scopes.length > 0) params.scope = scopes.join(o.scopeSeparator);
    if (codeVerifier) {
      params.code_challenge = await oidc.calculatePKCECodeChallenge(codeVerifier);
      params.code_challenge_method = 'S256';
    }
    if (nonce) params.nonce = nonce;
    return { url: oidc.buildAuthorizationUrl(cfg, params).href, state, codeVerifier, nonce };
  }

  /**
   * Validates the callback (state, `iss` when returned, and required when the provider advertises it) and
   * exchanges the code with the PKCE verifier. Throws CustosException('oauth_callback_invalid') otherwise.
   */
  async exchangeCode(
    definition: ProviderDefinition,
    app: OpenedProviderApp,
    callbackQuery: string,
    checks: { state: string; codeVerifier: string | null; nonce: string | null; requestedScopes: string[] },
  ): Promise<TokenSet> {
    const cfg = await this.configuration(definition, app);
    const current = new URL(`${this.redirectUri(definition.key)}?${callbackQuery}`);
    let tokens: Awaited<ReturnType<typeof oidc.authorizationCodeGrant>>;
    try {
      tokens = await oidc.authorizationCodeGrant(cfg, current, {
        expectedState: checks.state,
        ...(checks.codeVerifier ? { pkceCodeVerifier: checks.codeVerifier } : {}),
        ...(checks.nonce ? { expectedNonce: checks.nonce } : {}),
        idTokenExpected: checks.nonce !== null,
      });
    } catch (err) {
      if (err instanceof CustosException) throw err;
      const e = err as { code?: string; error?: string; name?: string };
      throw new CommonException('outbound_request_failed', 'The provider did not complete the sign-in', {
        reason: e.error ?? e.code ?? e.name ?? 'unknown',
      });
    }
    if (!tokens.access_token) {
      throw new CommonException('outbound_request_failed', 'The provider returned no access token');
    }
    const expiresIn = tokens.expiresIn();
    const granted = typeof tokens.scope === 'string' ? tokens.scope.split(/[ ,]+/).filter(Boolean) : null;
    return {
      accessToken: tokens.access_token,
      refreshToken: tokens.refresh_token ?? null,
      expiresAt:
        expiresIn !== undefined
          ? new Date(Date.now() + expiresIn * 1000)
          : tokens.refresh_token
            ? new Date(Date.now() + oauth2(definition).defaultExpiresIn * 1000)
            : null,
      scopes: granted ?? checks.requestedScopes,
      idToken: checks.nonce && typeof tokens.id_token === 'string' ? tokens.id_token : null,
    };
  }

  /**
   * Refreshes a token set with the tenant's app. A response without a refresh token keeps the old one; a
   * response without expires_in gets the provider's default lifetime.
   */
  async refresh(
    definition: ProviderDefinition,
    app: OpenedProviderApp,
    refreshToken: string,
    timeoutMs = 10_000,
    /** Ask for an access token with just these scopes, a subset of the grant (RFC 6749 §6). */
    scopes?: string[],
  ): Promise<{ accessToken: string; refreshToken: string | null; expiresAt: Date; scopes: string[] | null }> {
    const cfg = await this.configuration(definition, app, timeoutMs);
    const tokens = await oidc.refreshTokenGrant(
      cfg,
      refreshToken,
      scopes ? { scope: scopes.join(oauth2(definition).scopeSeparator) } : undefined,
    );
    if (!tokens.access_token)
      throw new CommonException('outbound_request_failed', 'No access token in the refresh');
    const expiresIn = tokens.expiresIn() ?? oauth2(definition).defaultExpiresIn;
    return {
      accessToken: tokens.access_token,
      refreshToken: tokens.refresh_token ?? null,
      expiresAt: new Date(Date.now() + expiresIn * 1000),
      scopes: typeof tokens.scope === 'string' ? tokens.scope.split(/[ ,]+/).filter(Boolean) : null,
    };
  }

  /** RFC 7009 revocation with the tenant's app credentials. Throws on any failure (the caller retries). */
  async revoke(
    definition: ProviderDefinition,
    app: OpenedProviderApp,
    token: string,
    hint: 'refresh_token' | 'access_token',
  ): Promise<void> {
    const cfg = await this.configuration(definition, app);
    await oidc.tokenRevocation(cfg, token, { token_type_hint: hint });
  }

  private async configuration(
    definition: ProviderDefinition,
    app: OpenedProviderApp,
    timeoutMs = 10_000,
  ): Promise<oidc.Configuration> {
    const o = oauth2(definition);
    const server: oidc.ServerMetadata = {
      issuer: o.issuer ?? new URL(o.authorizationUrl).origin,
      authorization_endpoint: o.authorizationUrl,
      token_endpoint: o.tokenUrl,
      ...(o.revocationUrl ? { revocation_endpoint: o.revocationUrl } : {}),
      // A provider with a known issuer is expected to return it (RFC 9207).
      ...(o.issuer ? { authorization_response_iss_parameter_supported: true } : {}),
      // openid-client's own ID token claim checks would otherwise allow RS256 only; the signature itself is
      // verified by the connect flow, against the provider's jwksUri, with the same asymmetric list.
      id_token_signing_alg_values_supported: [...SIGNING_ALGORITHMS],
    };
    const auth = await clientAuth(o, app);
    const cfg = new oidc.Configuration(server, app.clientId, {}, auth);
    cfg[oidc.customFetch] = (url, options) => this.fetch(url, options, timeoutMs);
    const insecure = [o.authorizationUrl, o.tokenUrl].some((u) => new URL(u).protocol === 'http:');
    // Plain http only ever reaches hosts listed in CUSTOS_OUTBOUND_ALLOW_HOSTS (development and tests).
    if (insecure) oidc.allowInsecureRequests(cfg);
    return cfg;
  }

  /** openid-client's fetch, through the SSRF-safe client. */
  readonly ssrfSafeFetch = (url: string, options: oidc.CustomFetchOptions): Promise<Response> =>
    this.fetch(url, options);

  private async fetch(url: string, options: oidc.CustomFetchOptions, timeoutMs = 10_000): Promise<Response> {
    const headers: Record<string, string> = { ...options.headers };
    const res = await this.outbound.request(url, {
      method: options.method,
      headers,
      ...(typeof options.body === 'string' ? { body: options.body } : {}),
      ...(options.body instanceof URLSearchParams ? { body: options.body.toString() } : {}),
      followRedirects: false,
      timeoutMs,
    });
    const out = new Headers();
    for (const [k, v] of Object.entries(res.headers)) {
      if (v === undefined) continue;
      for (const one of Array.isArray(v) ? v : [v]) out.append(k, one);
    }
    return new Response(res.status === 204 || res.status === 304 ? null : new Uint8Array(res.body), {
      status: res.status,
      headers: out,
    });
  }
}

function oauth2(definition: ProviderDefinition): OAuth2Config {
  if (!definition.oauth2) throw new ProviderException('credential_type_mismatch', 'Not an OAuth provider');
  return definition.oauth2;
}

async function clientAuth(o: OAuth2Config, app: OpenedProviderApp): Promise<oidc.ClientAuth> {
  switch (o.tokenEndpointAuthMethod) {
    case 'client_secret_basic':
      return oidc.ClientSecretBasic(app.clientSecret ?? '');
    case 'client_secret_post':
      return oidc.ClientSecretPost(app.clientSecret ?? '');
    case 'private_key_jwt': {
      const jwk = app.privateKeyJwk;
      if (!jwk) throw new CommonException('validation_failed', 'The app has no private key');
      const alg = typeof jwk.alg === 'string' ? jwk.alg : jwk.kty === 'EC' ? 'ES256' : 'RS256';
      const key = await importJWK(jwk as JWK, alg);
      return oidc.PrivateKeyJwt({
        key: key as CryptoKey,
        ...(typeof jwk.kid === 'string' ? { kid: jwk.kid } : {}),
      });
    }
  }
}
