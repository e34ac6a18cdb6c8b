/**
 * The hosted connect flow behind a connect session's link. The link is the capability (single use,
 * short-lived; audited as such): whoever opens it connects the session's user.
 *
 * OAuth providers: the authorization code flow with PKCE (S256, fresh verifier each time), a random
 * single-use `state` stored hashed and bound to the browser by a `__Host-` cookie, the per-provider redirect
 * URI, `iss` checked when returned (and required when the provider has a known issuer), and a nonce bound to
 * the flow for OpenID scopes. The code is exchanged with the tenant's own app; the token set is stored
 * encrypted. The ID token's `sub` becomes the connection's provider account id only when the provider has a
 * `jwksUri` and the token passes every check (provider-id-token.ts); a token that fails stores nothing, and a
 * provider without `jwksUri` keeps no account id (its ID token is never read). A provider error leaves the
 * session usable until it expires.
 *
 * API-key providers: a form protected by a double-submit CSRF token; the key is checked against the
 * provider's verification endpoint (through the SSRF-safe client) before it is saved.
 */
import { randomBytes } from 'node:crypto';
import { Inject, Injectable } from '@nestjs/common';
import type { Logger } from 'pino';
import { DataSource } from 'typeorm';
import { AuditService, type Actor } from '../audit/audit.service.js';
import { JwksResolver } from '../identity/jwks-resolver.js';
import { CustosException } from '../common/errors.js';
import { LOGGER } from '../common/logger.js';
import { OutboundHttpClient } from '../common/outbound-http.js';
import { CONFIG, type Config } from '../config/config.js';
import { ConnectionsRepository } from '../connections/connections.repository.js';
import { ConnectionsService } from '../connections/connections.service.js';
import { DataKeyService, type RecordField } from '../crypto/data-key.service.js';
import { ProviderAppsService } from '../providers/provider-apps.service.js';
import { ProviderRegistry } from '../providers/provider-registry.js';
import type { ProviderDefinition } from '../providers/provider-definition.js';
import { WebhooksService } from '../tenants/webhooks.service.js';
import { ProviderOAuthClient } from '../providers/oauth-client.js';
import { cookie, FlowPageError, sameHash, sha256 } from './browser-binding.js';
import { ConnectSessionsRepository, type FlowSessionRow } from './connect-sessions.repository.js';
import { IdTokenRejected, verifyProviderIdToken } from './provider-id-token.js';

const TOKEN = /^cst_[A-Za-z0-9_-]{43}$/;
export const FLOW_COOKIE = '__Host-custos_flow';
export const CSRF_COOKIE = '__Host-custos_csrf';

const flowField = (sessionId: string): RecordField => ({
  scope: 'connect_session',
  recordId: sessionId,
  field: 'flow',
});
const linkActor = (s: FlowSessionRow): Actor => ({ type: 'user', id: s.user_id });

@Injectable()
export class ConnectFlowService {
  constructor(
    @Inject(DataSource) private readonly db: DataSource,
    @Inject(ConnectSessionsRepository) private readonly sessions: ConnectSessionsRepository,
    @Inject(AuditService) private readonly audit: AuditService,
    @Inject(ProviderRegistry) private readonly providers: ProviderRegistry,
    @Inject(ProviderAppsService) private readonly apps: ProviderAppsService,
    @Inject(ProviderOAuthClient) private readonly oauth: ProviderOAuthClient,
    @Inject(ConnectionsService) private readonly connections: ConnectionsService,
    @Inject(ConnectionsRepository) private readonly connectionRows: ConnectionsRepository,
    @Inject(DataKeyService) private readonly dataKeys: DataKeyService,
    @Inject(OutboundHttpClient) private readonly outbound: OutboundHttpClient,
    @Inject(CONFIG) private readonly config: Config,
    @Inject(LOGGER) private readonly log: Logger,
    @Inject(WebhooksService) private readonly webhooks: WebhooksService,
    @Inject(JwksResolver) private readonly jwks: JwksResolver,
  ) {}

  /** The pending session behind a link, or a page saying why there is none. */
  async session(token: string): Promise<{ session: FlowSessionRow; definition: ProviderDefinition }> {
    const session = TOKEN.test(token) ? await this.sessions.findByTokenHash(sha256(token)) : undefined;
    if (!session) throw new FlowPageError(404, 'Link not found', 'This connect link is not valid.');
    if (session.status === 'completed') {
      throw new FlowPageError(
        410,
        'Already connected',
        'This link has been used. You can close this window.',
      );
    }
    if (session.expires_at.getTime() <= Date.now()) {
      throw new FlowPageError(410, 'Link expired', 'This connect link has expired. Ask for a new one.');
    }
    const definition = await this.providers.get(session.tenant_id, session.provider);
    if (!definition) throw new FlowPageError(404, 'Unknown provider', 'This provider is not available.');
    return { session, definition };
  }

  /** The page behind the link; records the first opening. */
  async open(
    token: string,
  ): Promise<{ session: FlowSessionRow; definition: ProviderDefinition; csrf: string }> {
    const { session, definition } = await this.session(token);
    if (!session.opened_at) {
      await this.db.transaction(async (m) => {
        if (await this.sessions.markOpened(m, session.id)) {
          await this.event(session, 'connect_session.opened', 'allowed', {}, m);
        }
      });
    }
    return { session, definition, csrf: randomBytes(24).toString('base64url') };
  }

  /** Whether this browser may connect: always, unless the tenant requires sign-in and it has not happened. */
  signedIn(session: FlowSessionRow, loginCookie: string | undefined): boolean {
    return !session.login_required || sameHash(session.verified_browser_hash, loginCookie);
  }

  private requireSignIn(session: FlowSessionRow, loginCookie: string | undefined): void {
    if (!this.signedIn(session, loginCookie)) {
      throw new FlowPageError(403, 'Sign in first', 'Open your link again and sign in before connecting.');
    }
  }

  /** Starts the authorization request: returns the provider URL and the browser-binding cookie. */
  async start(token: string, loginCookie?: string): Promise<{ location: string; browserCookie: string }> {
    const { session, definition } = await this.session(token);
    this.requireSignIn(session, loginCookie);
    if (definition.authMode !== 'oauth2')
      throw new FlowPageError(400, 'Not an OAuth provider', 'Use the form instead.');
    const app = await this.apps.open(session.tenant_id, session.provider);
    if (!app) {
      throw new FlowPageError(
        503,
        'Not available yet',
        `${definition.name} is not set up for this organisation yet. Please contact your administrator.`,
      );
    }
    const scopes =
      session.scopes.length > 0
        ? session.scopes
        : app.scopes.length > 0
          ? app.scopes
          : definition.oauth2!.scopes;
    const request = await this.oauth.authorizationUrl(definition, app, scopes);
    const browser = randomBytes(32).toString('base64url');
    const secrets = await this.dataKeys.seal(
      session.tenant_id,
      flowField(session.id),
      JSON.stringify({ codeVerifier: request.codeVerifier, nonce: request.nonce, scopes }),
    );
    await this.db.transaction(async (m) => {
      await this.sessions.startFlow(m, session.id, sha256(request.state), sha256(browser), secrets);
      await this.event(
        session,
        'connect_session.started',
        'allowed',
        { scopes, pkce: request.codeVerifier !== null },
        m,
      );
    });
    const ttl = Math.max(60, Math.floor((session.expires_at.getTime() - Date.now()) / 1000));
    return { location: request.url, browserCookie: cookie(FLOW_COOKIE, browser, ttl, 'Lax') };
  }

  /** The provider's redirect back. */
  async callback(
    provider: string,
    query: Record<string, string | undefined>,
    rawQuery: string,
    browser: string | undefined,
  ): Promise<{ location?: string; title: string; message: string }> {
    const state = query.state;
    if (!state || state.length > 512)
      throw new FlowPageError(400, 'Sign-in not recognised', 'The sign-in response has no valid state.');
    const session = await this.sessions.findByStateHash(sha256(state), provider);
    if (!session || session.status !== 'pending' || session.expires_at.getTime() <= Date.now()) {
      throw new FlowPageError(
        400,
        'Sign-in not recognised',
        'This sign-in response is unknown, used or expired. Start again from your link.',
      );
    }
    // The state must come back to the browser that started the flow.
    if (!sameHash(session.browser_hash, browser)) {
      await this.event(session, 'connect_session.failed', 'denied', { reason: 'browser_mismatch' });
      throw new FlowPageError(
        400,
        'Sign-in not recognised',
        'This sign-in was started in another browser. Start again from your link.',
      );
    }
    // Single use: whoever clears the state first owns this response.
    const envelope = await this.sessions.takeState(session.id, sha256(state), session.flow_secrets);
    if (!envelope) {
      throw new FlowPageError(400, 'Sign-in not recognised', 'This sign-in response has already been used.');
    }
    const definition = await this.providers.get(session.tenant_id, provider);
    if (!definition || definition.authMode !== 'oauth2')
      throw new FlowPageError(404, 'Unknown provider', 'This provider is not available.');
    if (query.error !== undefined) {
      const reason = /^[a-z_]{1,64}$/.test(query.error) ? query.error : 'provider_error';
      await this.fail(session, reason);
      const declined = reason === 'access_denied';
      throw new FlowPageError(
        declined ? 200 : 502,
        declined ? 'Not connected' : 'Something went wrong',
        declined
          ? `You did not allow access to ${definition.name}. You can use the same link to try again while it is valid.`
          : `${definition.name} reported an error (${reason}). You can use the same link to try again while it is valid.`,
      );
    }
    const secrets = JSON.parse(
      await this.dataKeys.open(session.tenant_id, flowField(session.id), envelope),
    ) as {
      codeVerifier: string | null;
      nonce: string | null;
      scopes: string[];
    };
    const app = await this.apps.open(session.tenant_id, provider);
    if (!app)
      throw new FlowPageError(
        503,
        'Not available',
        `${definition.name} is no longer set up. Contact your administrator.`,
      );
    let tokens;
    try {
      tokens = await this.oauth.exchangeCode(definition, app, rawQuery, {
        state,
        codeVerifier: secrets.codeVerifier,
        nonce: secrets.nonce,
        requestedScopes: secrets.scopes,
      });
    } catch (err) {
      const detail = err instanceof CustosException ? err.details?.reason : undefined;
      const reason =
        typeof detail === 'string' ? detail : err instanceof CustosException ? err.code : 'exchange_failed';
      await this.fail(session, reason.slice(0, 64));
      throw new FlowPageError(
        502,
        'Could not connect',
        `${definition.name} did not complete the sign-in (${reason.slice(0, 64)}). Use your link to try again.`,
      );
    }
    const externalAccountId = await this.verifiedAccountId(session, definition, app.clientId, {
      idToken: tokens.idToken,
      nonce: secrets.nonce,
    });
    const { connection } = await this.connections.importCredential(
      linkActor(session),
      session.tenant_id,
      session.user_id,
      provider,
      {
        type: 'oauth2',
        accessToken: tokens.accessToken,
        ...(tokens.refreshToken ? { refreshToken: tokens.refreshToken } : {}),
        ...(tokens.expiresAt ? { expiresAt: tokens.expiresAt.toISOString() } : {}),
        scopes: tokens.scopes,
      },
    );
    await this.complete(session, connection.id, {
      scopes: tokens.scopes,
      externalAccountId,
      idToken: externalAccountId === null ? 'not_read' : 'verified',
    });
    return session.return_to
      ? { location: session.return_to, title: 'Connected', message: 'Connected.' }
      : {
          title: 'Connected',
          message: `Your ${definition.name} account is connected. You can close this window.`,
        };
  }

  /**
   * The provider's account id from a verified ID token, or null when there is none to read: the provider has
   * no jwksUri, or the flow asked for no OpenID scope (no nonce, so no ID token is expected). A token that
   * fails a check ends the flow here, before anything is stored, with an audited failure.
   */
  private async verifiedAccountId(
    session: FlowSessionRow,
    definition: ProviderDefinition,
    clientId: string,
    received: { idToken: string | null; nonce: string | null },
  ): Promise<string | null> {
    const o = definition.oauth2;
    if (!o?.jwksUri || !o.issuer || received.nonce === null) return null;
    try {
      return await verifyProviderIdToken(
        received.idToken,
        { issuer: o.issuer, clientId, nonce: received.nonce },
        this.jwks.keyGetter({ jwks: null, jwksUri: o.jwksUri }),
      );
    } catch (err) {
      if (!(err instanceof IdTokenRejected)) throw err;
      await this.fail(session, err.reason, { check: err.check });
      throw new FlowPageError(
        502,
        'Could not connect',
        err.reason === 'id_token_keys_unavailable'
          ? `${definition.name}'s signing keys could not be fetched to check the sign-in. Nothing was saved. Use your link to try again shortly.`
          : `The sign-in response from ${definition.name} could not be verified. Nothing was saved. Use your link to try again.`,
      );
    }
  }

  /** The API-key form's submission. */
  async submitApiKey(
    token: string,
    apiKey: string,
    loginCookie?: string,
  ): Promise<{ location?: string; title: string; message: string }> {
    const { session, definition } = await this.session(token);
    this.requireSignIn(session, loginCookie);
    if (definition.authMode !== 'api_key')
      throw new FlowPageError(400, 'Not an API-key provider', 'Use the sign-in button instead.');
    if (!/^[\x21-\x7e]{1,8192}$/.test(apiKey)) {
      throw new FlowPageError(400, 'Check the key', 'That does not look like an API key.');
    }
    const verify = definition.apiKey?.verify;
    if (verify) {
      let status: number;
      try {
        const res = await this.outbound.request(verify.url, {
          method: verify.method,
          headers: { ...(verify.headers ?? {}), [verify.header]: verify.format.replace('{key}', apiKey) },
          timeoutMs: 10_000,
          maxResponseBytes: 64 * 1024,
        });
        status = res.status;
      } catch (err) {
        this.log.warn(
          { provider: definition.key, err: { name: (err as Error).name } },
          'API key verification failed',
        );
        throw new FlowPageError(
          502,
          'Could not check the key',
          `${definition.name} could not be reached to check the key. Try again shortly.`,
        );
      }
      if (status === 401 || status === 403) {
        await this.fail(session, 'key_rejected');
        throw new FlowPageError(
          400,
          'Key refused',
          `${definition.name} did not accept this key. Check it and try again.`,
        );
      }
      if (status < 200 || status >= 300) {
        throw new FlowPageError(
          502,
          'Could not check the key',
          `${definition.name} answered ${status} when checking the key. Try again shortly.`,
        );
      }
    }
    const { connection } = await this.connections.importCredential(
      linkActor(session),
      session.tenant_id,
      session.user_id,
      definition.key,
      {
        type: 'api_key',
        apiKey,
      },
    );
    await this.complete(session, connection.id, { verified: verify !== undefined });
    return session.return_to
      ? { location: session.return_to, title: 'Connected', message: 'Connected.' }
      : {
          title: 'Connected',
          message: `Your ${definition.name} key is connected. You can close this window.`,
        };
  }

  private async complete(
    session: FlowSessionRow,
    connectionId: string,
    details: Record<string, unknown> & { externalAccountId?: string | null },
  ): Promise<void> {
    await this.db.transaction(async (m) => {
      if (details.externalAccountId) {
        await this.connectionRows.setExternalAccount(
          m,
          connectionId,
          details.externalAccountId.slice(0, 255),
        );
      }
      await this.sessions.markCompleted(m, session.id, connectionId);
      await this.event(session, 'connect_session.completed', 'allowed', { connectionId, ...details }, m);
    });
    this.webhooks.notify(session.tenant_id, 'connection.created', {
      connectionId,
      userId: session.user_id,
      provider: session.provider,
      connectSessionId: session.id,
    });
  }

  private async fail(
    session: FlowSessionRow,
    reason: string,
    details: Record<string, unknown> = {},
  ): Promise<void> {
    await this.db.transaction(async (m) => {
      await this.sessions.setLastError(m, session.id, reason);
      await this.event(session, 'connect_session.failed', 'failed', { reason, ...details }, m);
    });
  }

  private async event(
    session: FlowSessionRow,
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
        actor: linkActor(session),
        subjectUserId: session.user_id,
        provider: session.provider,
        // Without connectLogin, holding the link is what proves the user.
        details: {
          sessionId: session.id,
          userBinding: session.login_required ? 'identity_provider' : 'link',
          ...details,
        },
      },
      m,
    );
  }
}
