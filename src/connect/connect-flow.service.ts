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
 * provider without `jwksUri` keeps no account id (its ID token is never read).
 *
 * API-key providers: a form protected by a double-submit CSRF token; the key is checked against the
 * provider's verification endpoint (through the SSRF-safe client) before it is saved.
 *
 * How an attempt ends: connected (the link is spent), or declined at the provider, or failed; the last two
 * are audited (`connect_session.declined` / `.failed` with a stable reason), recorded on the session, and
 * leave its link usable until it expires. The browser then goes back to the session's `returnTo` with the
 * session id and outcome, or gets a page saying what happened and what to do next ("Try again" opens the
 * link again: the link's token is kept, sealed, with the flow's secrets until the provider answers).
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
import { describeScopes, type ProviderDefinition } from '../providers/provider-definition.js';
import { WebhooksService } from '../tenants/webhooks.service.js';
import { ProviderOAuthClient } from '../providers/oauth-client.js';
import { cookie, FlowPageError, sameHash, sha256 } from './browser-binding.js';
import type { ConnectAttemptOutcome } from './connect-session.entity.js';
import { pageBranding, returnAction, withOutcome } from './connect-outcome.js';
import type { PageAction, PageBranding, ShownScope } from './connect-pages.js';
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

/** What the flow's pending authorization request keeps, sealed, until the provider answers. */
interface FlowSecrets {
  codeVerifier: string | null;
  nonce: string | null;
  scopes: string[];
  /** The link's token, for the "Try again" of the page that ends the attempt. */
  token?: string;
}

/** How a step ended: the page to show, or where to send the browser (`returnTo` with the outcome). */
export interface FlowEnd {
  location?: string;
  title: string;
  message: string;
  brand?: PageBranding;
}

/** "about N minutes", for how long a link still works. */
function minutesLeft(expiresAt: Date): string {
  const n = Math.max(1, Math.round((expiresAt.getTime() - Date.now()) / 60_000));
  return n === 1 ? 'about a minute' : `about ${n} minutes`;
}

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

  /** The branding of a session's pages. */
  brand(session: FlowSessionRow): PageBranding {
    return pageBranding(session, this.config.publicUrl);
  }

  private link(token: string): string {
    return `${this.config.publicUrl}/connect/${token}`;
  }

  /** "Try again": the link's page, while the link works. */
  private retry(session: FlowSessionRow, token: string | undefined, label = 'Try again'): PageAction[] {
    return token && session.expires_at.getTime() > Date.now() ? [{ href: this.link(token), label }] : [];
  }

  /** The pending session behind a link, or a page saying why there is none and what to do. */
  async session(token: string): Promise<{ session: FlowSessionRow; definition: ProviderDefinition }> {
    const session = TOKEN.test(token) ? await this.sessions.findByTokenHash(sha256(token)) : undefined;
    if (!session) {
      throw new FlowPageError(
        404,
        'Link not found',
        'This connect link is not valid. Check that you opened the whole link you were given (a link can be cut short when it is copied), or go back to the app that sent you here and ask for a new one.',
      );
    }
    const brand = this.brand(session);
    const definition = await this.providers.get(session.tenant_id, session.provider);
    const providerName = definition?.name ?? session.provider;
    if (session.status === 'completed') {
      throw new FlowPageError(
        410,
        'Already connected',
        `This link has been used: your ${providerName} account is connected. You can close this window.`,
        { brand, actions: returnAction(session, brand, 'connected') },
      );
    }
    if (session.status === 'failed') {
      throw new FlowPageError(
        410,
        'Link closed',
        `This link can no longer be used: ${brand.name} no longer offers ${providerName}. Nothing was connected. If you still need it, ask the app that sent you here for a new link.`,
        { brand, actions: returnAction(session, brand, 'failed') },
      );
    }
    if (session.expires_at.getTime() <= Date.now()) {
      throw this.expired(session, providerName);
    }
    if (!definition) {
      throw new FlowPageError(
        404,
        'Unknown provider',
        `${brand.name} no longer offers this provider, so nothing can be connected with this link. Contact your administrator.`,
        { brand, actions: returnAction(session, brand, 'failed') },
      );
    }
    return { session, definition };
  }

  private expired(session: FlowSessionRow, providerName: string): FlowPageError {
    const brand = this.brand(session);
    const minutes = Math.round(this.config.connectSessionTtlSeconds / 60);
    return new FlowPageError(
      410,
      'Link expired',
      `This connect link has expired (a link works for ${minutes} minutes), so your ${providerName} account was not connected. Go back to the app that sent you here and ask for a new link.`,
      { brand, actions: returnAction(session, brand, 'expired') },
    );
  }

  /**
   * The page behind the link; records the first opening. The scopes it shows are those the request will ask
   * for (the session's, else the tenant app's defaults, else the provider's), in the provider's words where its
   * definition has them. An OAuth provider whose app has gone meanwhile gets the "not set up" page at once.
   */
  async open(token: string): Promise<{
    session: FlowSessionRow;
    definition: ProviderDefinition;
    scopes: ShownScope[];
    csrf: string;
  }> {
    const { session, definition } = await this.session(token);
    let scopes = session.scopes;
    if (definition.authMode === 'oauth2') {
      const app = await this.apps.get(session.tenant_id, session.provider).catch((err: unknown) => {
        if (err instanceof CustosException && err.code === 'not_found') return null;
        throw err;
      });
      if (!app) throw await this.notSetUp(session, definition);
      if (scopes.length === 0) scopes = app.scopes.length > 0 ? app.scopes : definition.oauth2!.scopes;
    }
    if (!session.opened_at) {
      await this.db.transaction(async (m) => {
        if (await this.sessions.markOpened(m, session.id)) {
          await this.event(session, 'connect_session.opened', 'allowed', {}, m);
        }
      });
    }
    return {
      session,
      definition,
      scopes: describeScopes(definition, scopes),
      csrf: randomBytes(24).toString('base64url'),
    };
  }

  /** The tenant's app at an OAuth provider is gone: the attempt fails, and the page says who can fix it. */
  private async notSetUp(session: FlowSessionRow, definition: ProviderDefinition): Promise<FlowPageError> {
    await this.endAttempt(session, 'failed', 'provider_not_configured');
    const brand = this.brand(session);
    return new FlowPageError(
      409,
      'Not available',
      `${definition.name} is not set up for ${brand.name} at the moment, so it cannot be connected. Nothing was changed. Please tell your administrator; once it is set up again, ask the app that sent you here for a new link.`,
      { brand, actions: returnAction(session, brand, 'failed') },
    );
  }

  /** Whether this browser may connect: always, unless the tenant requires sign-in and it has not happened. */
  signedIn(session: FlowSessionRow, loginCookie: string | undefined): boolean {
    return !session.login_required || sameHash(session.verified_browser_hash, loginCookie);
  }

  private requireSignIn(session: FlowSessionRow, loginCookie: string | undefined, token: string): void {
    if (!this.signedIn(session, loginCookie)) {
      throw new FlowPageError(
        403,
        'Sign in first',
        'Before connecting, you need to sign in so that we know this link is yours. Open your link again and sign in.',
        { brand: this.brand(session), actions: this.retry(session, token, 'Open the link and sign in') },
      );
    }
  }

  /** Starts the authorization request: returns the provider URL and the browser-binding cookie. */
  async start(token: string, loginCookie?: string): Promise<{ location: string; browserCookie: string }> {
    const { session, definition } = await this.session(token);
    this.requireSignIn(session, loginCookie, token);
    if (definition.authMode !== 'oauth2') {
      throw new FlowPageError(
        400,
        'Not an OAuth provider',
        `${definition.name} is connected with a key: use the form on your link's page.`,
        { brand: this.brand(session), actions: this.retry(session, token, 'Open the form') },
      );
    }
    const app = await this.apps.open(session.tenant_id, session.provider);
    if (!app) throw await this.notSetUp(session, definition);
    const scopes =
      session.scopes.length > 0
        ? session.scopes
        : app.scopes.length > 0
          ? app.scopes
          : definition.oauth2!.scopes;
    const request = await this.oauth.authorizationUrl(definition, app, scopes);
    const browser = randomBytes(32).toString('base64url');
    const flowSecrets: FlowSecrets = {
      codeVerifier: request.codeVerifier,
      nonce: request.nonce,
      scopes,
      token,
    };
    const secrets = await this.dataKeys.seal(
      session.tenant_id,
      flowField(session.id),
      JSON.stringify(flowSecrets),
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
  ): Promise<FlowEnd> {
    const unknown = () =>
      new FlowPageError(
        400,
        'Sign-in not recognised',
        'This answer from the provider does not belong to a connect link that is waiting for one: it is unknown or has been used. If your account is not connected yet, open your link again.',
      );
    const state = query.state;
    if (!state || state.length > 512) throw unknown();
    const session = await this.sessions.findByStateHash(sha256(state), provider);
    if (!session) throw unknown();
    if (session.status === 'completed' || session.status === 'failed') {
      // A replayed answer for a session that has ended: the session's own page says how it ended.
      throw unknown();
    }
    // The state must come back to the browser that started the flow.
    if (!sameHash(session.browser_hash, browser)) {
      await this.event(session, 'connect_session.failed', 'denied', { reason: 'browser_mismatch' });
      throw new FlowPageError(
        400,
        'Sign-in not recognised',
        'This sign-in was started in another browser or window, so for your safety nothing was connected. Open your link again in the browser you want to use.',
        { brand: this.brand(session) },
      );
    }
    if (session.expires_at.getTime() <= Date.now()) {
      const definition = await this.providers.get(session.tenant_id, provider);
      throw this.expired(session, definition?.name ?? provider);
    }
    // Single use: whoever clears the state first owns this response.
    const envelope = await this.sessions.takeState(session.id, sha256(state), session.flow_secrets);
    if (!envelope) throw unknown();
    const secrets = JSON.parse(
      await this.dataKeys.open(session.tenant_id, flowField(session.id), envelope),
    ) as FlowSecrets;
    const definition = await this.providers.get(session.tenant_id, provider);
    if (!definition || definition.authMode !== 'oauth2') {
      return this.attemptEnded(session, secrets.token, 'failed', 'unknown_provider', {
        status: 404,
        title: 'Unknown provider',
        message: `${this.brand(session).name} no longer offers this provider, so nothing was connected. Contact your administrator.`,
      });
    }
    if (query.error !== undefined) {
      const reason = /^[a-z_]{1,64}$/.test(query.error) ? query.error : 'provider_error';
      if (reason === 'access_denied') {
        return this.attemptEnded(session, secrets.token, 'declined', reason, {
          status: 200,
          title: 'Not connected',
          message: `You did not allow access to ${definition.name}, so nothing was connected. If that was a mistake, you can try again while this link is valid (${minutesLeft(session.expires_at)}).`,
        });
      }
      return this.attemptEnded(session, secrets.token, 'failed', reason, {
        status: 502,
        title: 'Could not connect',
        message: `${definition.name} reported an error (${reason}), so nothing was connected. You can try again while this link is valid; if it happens again, contact your administrator.`,
      });
    }
    const app = await this.apps.open(session.tenant_id, provider);
    if (!app) throw await this.notSetUp(session, definition);
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
      const reason = (
        typeof detail === 'string' ? detail : err instanceof CustosException ? err.code : 'exchange_failed'
      ).slice(0, 64);
      return this.attemptEnded(session, secrets.token, 'failed', reason, {
        status: 502,
        title: 'Could not connect',
        message: `${definition.name} did not complete the sign-in (${reason}), so nothing was connected. Use your link to try again; if it happens again, contact your administrator.`,
      });
    }
    const verified = await this.verifiedAccountId(definition, app.clientId, {
      idToken: tokens.idToken,
      nonce: secrets.nonce,
    });
    if (!verified.ok) {
      return this.attemptEnded(
        session,
        secrets.token,
        'failed',
        verified.reason,
        {
          status: 502,
          title: 'Could not connect',
          message:
            verified.reason === 'id_token_keys_unavailable'
              ? `${definition.name}'s signing keys could not be fetched to check the sign-in. Nothing was saved. Use your link to try again shortly.`
              : `The sign-in response from ${definition.name} could not be verified. Nothing was saved. Use your link to try again.`,
        },
        { check: verified.check },
      );
    }
    const externalAccountId = verified.accountId;
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
      'connect',
    );
    await this.complete(session, connection.id, {
      scopes: tokens.scopes,
      externalAccountId,
      idToken: externalAccountId === null ? 'not_read' : 'verified',
    });
    return this.connected(
      session,
      `Your ${definition.name} account is connected. You can close this window.`,
    );
  }

  /** The end of a connected flow: back to `returnTo` with the outcome, or a page. */
  private connected(session: FlowSessionRow, message: string): FlowEnd {
    return session.return_to
      ? {
          location: withOutcome(session.return_to, session.id, 'connected'),
          title: 'Connected',
          message: 'Connected.',
        }
      : { title: 'Connected', message, brand: this.brand(session) };
  }

  /**
   * An attempt that did not connect: recorded (the session's outcome and reason, and its audit event), then
   * the browser goes back to `returnTo` with the outcome, or gets a page with a "Try again" while the link
   * works.
   */
  private async attemptEnded(
    session: FlowSessionRow,
    token: string | undefined,
    outcome: ConnectAttemptOutcome,
    reason: string,
    page: { status: number; title: string; message: string },
    details: Record<string, unknown> = {},
  ): Promise<FlowEnd> {
    await this.endAttempt(session, outcome, reason, details);
    if (session.return_to) {
      return {
        location: withOutcome(session.return_to, session.id, outcome),
        title: page.title,
        message: page.message,
      };
    }
    throw new FlowPageError(page.status, page.title, page.message, {
      brand: this.brand(session),
      actions: this.retry(session, token),
    });
  }

  /**
   * The provider's account id from a verified ID token, or null when there is none to read: the provider has
   * no jwksUri, or the flow asked for no OpenID scope (no nonce, so no ID token is expected). A token that
   * fails a check ends the flow, before anything is stored, with an audited failure.
   */
  private async verifiedAccountId(
    definition: ProviderDefinition,
    clientId: string,
    received: { idToken: string | null; nonce: string | null },
  ): Promise<{ ok: true; accountId: string | null } | { ok: false; reason: string; check: string }> {
    const o = definition.oauth2;
    if (!o?.jwksUri || !o.issuer || received.nonce === null) return { ok: true, accountId: null };
    try {
      const accountId = await verifyProviderIdToken(
        received.idToken,
        { issuer: o.issuer, clientId, nonce: received.nonce },
        this.jwks.keyGetter({ jwks: null, jwksUri: o.jwksUri }),
      );
      return { ok: true, accountId };
    } catch (err) {
      if (!(err instanceof IdTokenRejected)) throw err;
      return { ok: false, reason: err.reason, check: err.check };
    }
  }

  /** The API-key form's submission. A refused key is shown on a page with the way back to the form. */
  async submitApiKey(token: string, apiKey: string, loginCookie?: string): Promise<FlowEnd> {
    const { session, definition } = await this.session(token);
    this.requireSignIn(session, loginCookie, token);
    const brand = this.brand(session);
    const again = { brand, actions: this.retry(session, token) };
    if (definition.authMode !== 'api_key') {
      throw new FlowPageError(
        400,
        'Not an API-key provider',
        `${definition.name} is connected by signing in there: use the button on your link's page.`,
        { brand, actions: this.retry(session, token, 'Open the link') },
      );
    }
    if (!/^[\x21-\x7e]{1,8192}$/.test(apiKey)) {
      throw new FlowPageError(
        400,
        'Check the key',
        'That does not look like an API key: a key is one line of letters, digits and symbols, without spaces. Check it and try again.',
        again,
      );
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
        await this.endAttempt(session, 'failed', 'verification_unavailable');
        throw new FlowPageError(
          502,
          'Could not check the key',
          `${definition.name} could not be reached to check the key, so nothing was saved. Try again in a few minutes.`,
          again,
        );
      }
      if (status === 401 || status === 403) {
        await this.endAttempt(session, 'failed', 'key_rejected');
        throw new FlowPageError(
          400,
          'Key refused',
          `${definition.name} did not accept this key, so nothing was saved. Check that you copied the whole key, then try again.`,
          again,
        );
      }
      if (status < 200 || status >= 300) {
        await this.endAttempt(session, 'failed', 'verification_failed', { status });
        throw new FlowPageError(
          502,
          'Could not check the key',
          `${definition.name} answered ${status} when checking the key, so nothing was saved. Try again in a few minutes.`,
          again,
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
      'connect',
    );
    await this.complete(session, connection.id, { verified: verify !== undefined });
    return this.connected(session, `Your ${definition.name} key is connected. You can close this window.`);
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

  /**
   * Records an attempt that did not connect: the session's outcome and reason (it stays usable until it
   * expires) and its event, `connect_session.declined` or `connect_session.failed`, with the stable reason.
   */
  private async endAttempt(
    session: FlowSessionRow,
    outcome: ConnectAttemptOutcome,
    reason: string,
    details: Record<string, unknown> = {},
  ): Promise<void> {
    await this.db.transaction(async (m) => {
      await this.sessions.recordOutcome(m, session.id, outcome, reason);
      await this.event(
        session,
        outcome === 'declined' ? 'connect_session.declined' : 'connect_session.failed',
        outcome === 'declined' ? 'denied' : 'failed',
        { reason, ...details },
        m,
      );
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
