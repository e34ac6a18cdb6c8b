/**
 * Same-user binding for the connect flow (the tenant's `connectLogin`): before connecting, the person in the
 * browser signs in at one of the tenant's identity providers (OIDC code flow with PKCE, state and nonce,
 * via openid-client, every request through the SSRF-safe client). The ID token is verified against the
 * provider's registered keys by the verifier the token endpoint uses for the same provider's tokens (refused
 * headers, pinned algorithms, issuer), with audience = the login client and this sign-in's nonce, and its
 * user claim must be the session's user. Only then is the browser marked, by a `__Host-` cookie whose hash
 * is stored on the session, as allowed to connect.
 */
import { randomBytes } from 'node:crypto';
import { Inject, Injectable } from '@nestjs/common';
import * as oidc from 'openid-client';
import { DataSource } from 'typeorm';
import { AuditService } from '../audit/audit.service.js';
import { JwksResolver } from '../identity/jwks-resolver.js';
import { CONFIG, type Config } from '../config/config.js';
import { DataKeyService } from '../crypto/data-key.service.js';
import {
  IdentityProvidersService,
  type IdentityProviderView,
} from '../identity/identity-providers.service.js';
import { IdpTokenError, inspectIdpToken, verifyIdpToken } from '../identity/idp-token-verifier.js';
import { cookie, FlowPageError, sameHash, sha256 } from './browser-binding.js';
import { ProviderOAuthClient } from '../providers/oauth-client.js';
import { TenantsRepository } from '../tenants/tenants.repository.js';
import { pageBranding } from './connect-outcome.js';
import type { PageAction } from './connect-pages.js';
import { ConnectSessionsRepository, type LoginSessionRow } from './connect-sessions.repository.js';

export const LOGIN_FLOW_COOKIE = '__Host-custos_login_flow';
export const LOGIN_COOKIE = '__Host-custos_login';

/** A tenant's connectLogin: its identity provider and the OIDC client Custos signs people in with there. */
export interface LoginSettings {
  idp: IdentityProviderView;
  clientId: string;
  clientSecret: string;
}

/** A sign-in request: where to send the browser, and what its callback needs (kept sealed until then). */
export interface SignInRequest {
  url: string;
  state: string;
  nonce: string;
  codeVerifier: string;
}

interface LoginSecrets {
  codeVerifier: string;
  nonce: string;
  browserHash: string;
  token: string;
}

const loginField = (sessionId: string) => ({ scope: 'connect_session', recordId: sessionId, field: 'login' });

@Injectable()
export class ConnectLoginService {
  constructor(
    @Inject(DataSource) private readonly db: DataSource,
    @Inject(ConnectSessionsRepository) private readonly sessions: ConnectSessionsRepository,
    @Inject(TenantsRepository) private readonly tenants: TenantsRepository,
    @Inject(DataKeyService) private readonly dataKeys: DataKeyService,
    @Inject(IdentityProvidersService) private readonly identityProviders: IdentityProvidersService,
    @Inject(JwksResolver) private readonly jwks: JwksResolver,
    @Inject(ProviderOAuthClient) private readonly oauth: ProviderOAuthClient,
    @Inject(AuditService) private readonly audit: AuditService,
    @Inject(CONFIG) private readonly config: Config,
  ) {}

  get redirectUri(): string {
    return `${this.config.publicUrl}/connect/login/callback`;
  }

  /** The tenant's connectLogin settings with its identity provider, or null when it has none. */
  async settings(tenantId: string): Promise<LoginSettings | null> {
    const row = await this.tenants.connectLogin(tenantId);
    const login = row?.connect_login;
    const sealed = row?.connect_login_secret;
    if (!login || !sealed) return null;
    const idp = await this.identityProviders
      .getIdentityProvider(tenantId, login.identityProvider)
      .catch(() => null);
    if (!idp) {
      throw new FlowPageError(
        503,
        'Not available',
        'Sign-in for this organisation is misconfigured. Contact your administrator.',
      );
    }
    const clientSecret = await this.dataKeys.open(
      tenantId,
      { scope: 'tenant', recordId: tenantId, field: 'connect_login_secret' },
      sealed,
    );
    return { idp, clientId: login.clientId, clientSecret };
  }

  /** Starts the sign-in: the identity provider's authorization URL and the cookie binding this browser. */
  async begin(
    session: { id: string; tenant_id: string },
    token: string,
  ): Promise<{ location: string; browserCookie: string }> {
    const settings = await this.settings(session.tenant_id);
    if (!settings) throw new FlowPageError(400, 'Not needed', 'This organisation does not require sign-in.');
    const { url, state, nonce, codeVerifier } = await this.signInRequest(settings, this.redirectUri);
    const browser = randomBytes(32).toString('base64url');
    const secrets: LoginSecrets = {
      codeVerifier,
      nonce,
      browserHash: sha256(browser).toString('hex'),
      token,
    };
    const sealed = await this.dataKeys.seal(
      session.tenant_id,
      loginField(session.id),
      JSON.stringify(secrets),
    );
    await this.sessions.startLogin(session.id, sha256(state), sealed);
    return { location: url, browserCookie: cookie(LOGIN_FLOW_COOKIE, browser, 900, 'Lax') };
  }

  /**
   * A sign-in request at the tenant's identity provider (code flow, PKCE S256, state, nonce), answered at
   * `redirectUri`: for every hosted page that must know who is in the browser (connect links, the portal).
   */
  async signInRequest(settings: LoginSettings, redirectUri: string): Promise<SignInRequest> {
    const cfg = await this.configuration(settings);
    const state = oidc.randomState();
    const nonce = oidc.randomNonce();
    const codeVerifier = oidc.randomPKCECodeVerifier();
    const url = oidc.buildAuthorizationUrl(cfg, {
      redirect_uri: redirectUri,
      response_type: 'code',
      scope: 'openid',
      state,
      nonce,
      code_challenge: await oidc.calculatePKCECodeChallenge(codeVerifier),
      code_challenge_method: 'S256',
    });
    return { url: url.href, state, nonce, codeVerifier };
  }

  /**
   * The identity provider's answer to a sign-in request: the code is exchanged (state, PKCE and nonce checked
   * by openid-client), then the ID token is verified against the keys the tenant registered for that provider
   * (the token endpoint's verifier), with audience = the login client and the request's nonce. Returns the
   * user claim's value, to be compared with the expected user. Throws on any failure (`signInFailure` names
   * it for the audit trail).
   */
  async signedInUser(
    settings: LoginSettings,
    redirectUri: string,
    rawQuery: string,
    expected: { state: string; nonce: string; codeVerifier: string },
  ): Promise<unknown> {
    const cfg = await this.configuration(settings);
    const tokens = await oidc.authorizationCodeGrant(cfg, new URL(`${redirectUri}?${rawQuery}`), {
      expectedState: expected.state,
      expectedNonce: expected.nonce,
      pkceCodeVerifier: expected.codeVerifier,
      idTokenExpected: true,
    });
    const payload = await verifyIdpToken(
      inspectIdpToken(tokens.id_token!, 'ID token'),
      settings.idp,
      this.jwks.keyGetter(settings.idp),
      { audience: settings.clientId, requiredClaims: ['nonce'] },
    );
    if (payload.nonce !== expected.nonce) throw new Error('nonce');
    return payload[settings.idp.userClaim];
  }

  /** The identity provider's redirect back: checks everything, then marks this browser as the user's. */
  async complete(
    query: Record<string, string | undefined>,
    rawQuery: string,
    browser: string | undefined,
  ): Promise<{ location: string; loginCookie: string }> {
    const state = query.state;
    const unknown = () =>
      new FlowPageError(
        400,
        'Sign-in not recognised',
        'This sign-in response is unknown, used or expired. Start again from your link.',
      );
    if (!state || state.length > 512) throw unknown();
    const session = await this.sessions.findByLoginStateHash(sha256(state));
    if (!session?.login_secrets || session.status !== 'pending' || session.expires_at.getTime() <= Date.now())
      throw unknown();
    const secrets = JSON.parse(
      await this.dataKeys.open(session.tenant_id, loginField(session.id), session.login_secrets),
    ) as LoginSecrets;
    const brand = pageBranding(session, this.config.publicUrl);
    if (!sameHash(Buffer.from(secrets.browserHash, 'hex'), browser)) {
      await this.event(session, 'connect_session.failed', 'denied', {
        reason: 'browser_mismatch',
        step: 'sign_in',
      });
      throw new FlowPageError(
        400,
        'Sign-in not recognised',
        'This sign-in was started in another browser or window, so for your safety it was not used. Open your link again in the browser you want to use.',
        { brand },
      );
    }
    // The way back to the link's page, to sign in again.
    const retry: PageAction[] = [
      { href: `${this.config.publicUrl}/connect/${secrets.token}`, label: 'Try again' },
    ];
    if (!(await this.sessions.takeLoginState(session.id, sha256(state)))) throw unknown();
    const settings = await this.settings(session.tenant_id);
    if (!settings) throw new FlowPageError(400, 'Not needed', 'This organisation does not require sign-in.');
    let user: unknown;
    try {
      user = await this.signedInUser(settings, this.redirectUri, rawQuery, {
        state,
        nonce: secrets.nonce,
        codeVerifier: secrets.codeVerifier,
      });
    } catch (err) {
      await this.failed(session, 'failed', signInFailure(err));
      throw new FlowPageError(
        502,
        'Sign-in failed',
        `The sign-in at ${settings.idp.name} did not complete, so nothing was connected. Use your link to try again; if it happens again, contact your administrator.`,
        { brand, actions: retry },
      );
    }
    if (user !== session.user_id) {
      await this.failed(session, 'denied', 'user_mismatch');
      throw new FlowPageError(
        403,
        'Wrong account',
        `This link was made for another person, but you signed in to ${settings.idp.name} as someone else, so nothing was connected. If you have more than one account there, sign out of ${settings.idp.name}, then try again and sign in with the right one; otherwise ask for your own link.`,
        { brand, actions: retry },
      );
    }
    const verified = randomBytes(32).toString('base64url');
    await this.db.transaction(async (m) => {
      await this.sessions.setVerifiedBrowser(m, session.id, sha256(verified));
      await this.event(
        session,
        'connect_session.user_verified',
        'allowed',
        { identityProvider: settings.idp.name },
        m,
      );
    });
    const ttl = Math.max(60, Math.floor((session.expires_at.getTime() - Date.now()) / 1000));
    return {
      location: `${this.config.publicUrl}/connect/${secrets.token}`,
      loginCookie: cookie(LOGIN_COOKIE, verified, ttl, 'Lax'),
    };
  }

  /**
   * A sign-in that did not let the person connect: the session's last attempt failed (it stays usable), and
   * `connect_session.failed` says why.
   */
  private async failed(
    session: LoginSessionRow,
    outcome: 'denied' | 'failed',
    reason: string,
  ): Promise<void> {
    await this.db.transaction(async (m) => {
      await this.sessions.recordOutcome(m, session.id, 'failed', reason);
      await this.event(session, 'connect_session.failed', outcome, { reason, step: 'sign_in' }, m);
    });
  }

  private async configuration(settings: LoginSettings): Promise<oidc.Configuration> {
    const insecure = new URL(settings.idp.issuer).protocol === 'http:';
    return oidc.discovery(
      new URL(settings.idp.issuer),
      settings.clientId,
      undefined,
      oidc.ClientSecretBasic(settings.clientSecret),
      {
        // Plain http only reaches hosts in CUSTOS_OUTBOUND_ALLOW_HOSTS (the SSRF-safe fetch enforces it).
        ...(insecure ? { execute: [oidc.allowInsecureRequests] } : {}),
        [oidc.customFetch]: this.oauth.ssrfSafeFetch,
      },
    );
  }

  private async event(
    session: { id: string; tenant_id: string; user_id: string; provider: string },
    action: string,
    outcome: 'allowed' | 'denied' | 'failed',
    details: Record<string, unknown>,
    m?: Parameters<AuditService['record']>[1],
  ): Promise<void> {
    await this.audit.record(
      {
        tenantId: session.tenant_id,
        action,
        outcome,
        actor: { type: 'user', id: session.user_id },
        subjectUserId: session.user_id,
        provider: session.provider,
        details: { sessionId: session.id, userBinding: 'identity_provider', ...details },
      },
      m,
    );
  }
}

/**
 * The audit reason of a failed sign-in: the OAuth error, else the library's code, else the error's name. A
 * refused ID token is recorded by jose's code when jose refused it, else by the verifier's reason.
 */
export function signInFailure(err: unknown): string {
  const cause = err instanceof IdpTokenError ? (err.cause ?? { code: err.reason }) : err;
  const e = cause as { code?: string; error?: string; name?: string };
  return (e.error ?? e.code ?? e.name ?? 'sign_in_failed').slice(0, 64);
}
