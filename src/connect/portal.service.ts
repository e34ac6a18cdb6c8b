/**
 * The end user's "my connections" portal. The tenant's backend (a tenant admin, or a connector) creates a link
 * for one user; the link opens once, within minutes, and becomes a browser session held by a `__Host-` cookie
 * (only hashes of the link's token and of the cookie are stored) that ends after a while without activity, and
 * in any case a few hours after it began. With the tenant's connectLogin, the session shows nothing until the
 * person has signed in at the tenant's identity provider as the link's user (the connect flow's sign-in, with
 * the portal's own redirect URI); without it, the link is the capability, as a connect link is.
 *
 * The person sees their live connections (provider, what each may do in the provider's words, when connected,
 * its status, when it was last used and by which connector, from the audit trail) and can disconnect one: the
 * credential store's revocation, which destroys the secrets at once and queues revocation at the provider
 * (RFC 7009), audited with the user as actor. Forms carry a CSRF token derived from the session's cookie.
 */
import { createHmac, randomBytes, randomUUID, timingSafeEqual } from 'node:crypto';
import { Inject, Injectable } from '@nestjs/common';
import type { Logger } from 'pino';
import { DataSource } from 'typeorm';
import { AuditService, type Actor } from '../audit/audit.service.js';
import { CommonException, CustosException } from '../common/errors.js';
import { LOGGER } from '../common/logger.js';
import { scopeTokenSchema } from '../common/validation.js';
import { CONFIG, type Config } from '../config/config.js';
import { connectionView, ConnectionsService } from '../connections/connections.service.js';
import { ConnectionsRepository } from '../connections/connections.repository.js';
import { ProviderRevocationService } from '../connections/provider-revocation.service.js';
import { DataKeyService, type RecordField } from '../crypto/data-key.service.js';
import { ConnectorsService } from '../identity/connectors.service.js';
import { hashKey } from '../identity/admin-keys.service.js';
import { describeScopes } from '../providers/provider-definition.js';
import { ProviderRegistry } from '../providers/provider-registry.js';
import { TenantsRepository } from '../tenants/tenants.repository.js';
import { cookie, FlowPageError, sameHash, sha256 } from './browser-binding.js';
import { ConnectException } from './connect.errors.js';
import { ConnectLoginService, signInFailure } from './connect-login.service.js';
import { pageBranding } from './connect-outcome.js';
import type { PageAction, PageBranding } from './connect-pages.js';
import { ConnectSessionsService } from './connect-sessions.service.js';
import type { PortalConnectionItem } from './portal-pages.js';
import type { CreatePortalSessionInput } from './portal-sessions.dto.js';
import {
  PortalSessionsRepository,
  type PortalLoginRow,
  type PortalSessionRow,
} from './portal-sessions.repository.js';

export const PORTAL_COOKIE = '__Host-custos_portal';
const LINK_TOKEN = /^cpt_[A-Za-z0-9_-]{43}$/;
/** How long a link can be opened. */
export const PORTAL_LINK_TTL_SECONDS = 15 * 60;
/** A browser session ends after this long without a request… */
export const PORTAL_IDLE_SECONDS = 30 * 60;
/** …and this long after the link was opened, whatever its activity. */
export const PORTAL_SESSION_MAX_SECONDS = 8 * 3600;
/** Ended sessions are deleted after this long (the audit trail keeps what happened). */
const RETENTION_SECONDS = 3600;

const loginField = (sessionId: string): RecordField => ({
  scope: 'portal_session',
  recordId: sessionId,
  field: 'login',
});
const userActor = (s: { user_id: string }): Actor => ({ type: 'user', id: s.user_id });

/** What the sign-in keeps, sealed, until the identity provider answers. */
interface PortalLoginSecrets {
  codeVerifier: string;
  nonce: string;
}

export interface CreatedPortalSession {
  id: string;
  userId: string;
  url: string;
  expiresAt: string;
}

/** What the portal's page shows: the sign-in step, or the person's connections. */
export type PortalView =
  | { kind: 'sign_in'; brand: PageBranding; identityProviderName: string; identityProviderOrigin: string }
  | {
      kind: 'connections';
      brand: PageBranding;
      userId: string;
      connections: PortalConnectionItem[];
      back: PageAction | null;
    };

/** A live browser session and its branding. */
interface LiveSession {
  row: PortalSessionRow;
  brand: PageBranding;
}

@Injectable()
export class PortalService {
  constructor(
    @Inject(DataSource) private readonly db: DataSource,
    @Inject(PortalSessionsRepository) private readonly sessions: PortalSessionsRepository,
    @Inject(TenantsRepository) private readonly tenants: TenantsRepository,
    @Inject(AuditService) private readonly audit: AuditService,
    @Inject(ConnectionsService) private readonly connections: ConnectionsService,
    @Inject(ConnectionsRepository) private readonly connectionRows: ConnectionsRepository,
    @Inject(ProviderRevocationService) private readonly revocations: ProviderRevocationService,
    @Inject(ProviderRegistry) private readonly providers: ProviderRegistry,
    @Inject(ConnectorsService) private readonly connectors: ConnectorsService,
    @Inject(ConnectSessionsService) private readonly connectSessions: ConnectSessionsService,
    @Inject(ConnectLoginService) private readonly login: ConnectLoginService,
    @Inject(DataKeyService) private readonly dataKeys: DataKeyService,
    @Inject(CONFIG) private readonly config: Config,
    @Inject(LOGGER) private readonly log: Logger,
  ) {}

  /** The page's address (the browser session's, with no token in it). */
  get home(): string {
    return `${this.config.publicUrl}/connect/portal`;
  }

  /** Where the tenant's identity provider sends the person back after signing in for the portal. */
  get loginRedirectUri(): string {
    return `${this.config.publicUrl}/connect/portal/login/callback`;
  }

  /**
   * Creates a portal link for one of the tenant's users, audited as `portal_session.created`. `returnTo`, if
   * given, must be on the tenant's allowed return URLs (the pages link back to it).
   */
  async createPortalSession(
    actor: Actor,
    tenantId: string,
    input: CreatePortalSessionInput,
  ): Promise<CreatedPortalSession> {
    if (input.returnTo !== undefined && !(await this.tenants.allowsReturnUrl(tenantId, input.returnTo))) {
      throw new ConnectException(
        'return_url_not_allowed',
        'returnTo is not on the tenant’s allowed return URLs',
      );
    }
    const token = 'cpt_' + randomBytes(32).toString('base64url');
    const id = randomUUID();
    const created = await this.db.transaction(async (m) => {
      const row = await this.sessions.insert(m, {
        id,
        tenantId,
        userId: input.userId,
        tokenHash: hashKey(token),
        returnTo: input.returnTo ?? null,
        createdBy: actor,
        linkTtlSeconds: PORTAL_LINK_TTL_SECONDS,
      });
      if (!row) throw new CommonException('not_found', 'Not found');
      await this.audit.record(
        {
          tenantId,
          action: 'portal_session.created',
          outcome: 'allowed',
          actor,
          subjectUserId: input.userId,
          details: { sessionId: id },
        },
        m,
      );
      return row;
    });
    // Each link leaves a row; ended ones go as new ones are made (bounded work, never in the caller's way).
    this.sessions
      .deleteEnded(RETENTION_SECONDS, 100)
      .catch((err: unknown) =>
        this.log.warn({ err: { name: (err as Error).name } }, 'pruning portal sessions failed'),
      );
    return {
      id,
      userId: input.userId,
      url: `${this.config.publicUrl}/connect/portal/${token}`,
      expiresAt: created.link_expires_at.toISOString(),
    };
  }

  /**
   * The link's page, before it is used: only a button that opens it. Opening takes a POST, so that a link
   * preview or a mail scanner fetching the address does not use the link up.
   */
  async linkPage(token: string): Promise<{ brand: PageBranding }> {
    const row = await this.unusedLink(token);
    return { brand: this.brand(row) };
  }

  /** The session behind a link that can still be opened, or a page saying why it cannot. */
  private async unusedLink(token: string): Promise<PortalSessionRow> {
    const row = LINK_TOKEN.test(token) ? await this.sessions.findByTokenHash(hashKey(token)) : undefined;
    if (!row) {
      throw new FlowPageError(
        404,
        'Link not found',
        'This link is not valid. Check that you opened the whole link you were given (a link can be cut short when it is copied), or go back to the app that sent you here and open your connections from there again.',
      );
    }
    const brand = this.brand(row);
    const back = this.back(row, brand);
    if (row.opened_at) {
      throw new FlowPageError(
        410,
        'Link already used',
        'This link works once, and it has been opened. If that was you, your connections are open in the browser where you first opened it. Otherwise, go back to the app that sent you here and open your connections from there again.',
        { brand, actions: back },
      );
    }
    if (row.link_expires_at.getTime() <= Date.now()) throw this.linkExpired(row);
    return row;
  }

  private linkExpired(row: PortalSessionRow): FlowPageError {
    const brand = this.brand(row);
    const minutes = Math.round(PORTAL_LINK_TTL_SECONDS / 60);
    return new FlowPageError(
      410,
      'Link expired',
      `This link has expired (a link works for ${minutes} minutes, once). Go back to the app that sent you here and open your connections from there again.`,
      { brand, actions: this.back(row, brand) },
    );
  }

  /**
   * Opens a link (once, before it expires): starts the browser session and returns its cookie. Audited as
   * `portal_session.opened`.
   */
  async openLink(token: string): Promise<{ setCookie: string }> {
    const row = await this.unusedLink(token);
    const cookieValue = randomBytes(32).toString('base64url');
    const opened = await this.db.transaction(async (m) => {
      if (!(await this.sessions.open(m, row.id, sha256(cookieValue), PORTAL_SESSION_MAX_SECONDS))) {
        return false;
      }
      await this.event(row, 'portal_session.opened', 'allowed', {}, m);
      return true;
    });
    if (!opened) {
      // Opened by another request meanwhile (that page), or expired just now.
      await this.unusedLink(token);
      throw this.linkExpired(row);
    }
    return { setCookie: cookie(PORTAL_COOKIE, cookieValue, PORTAL_SESSION_MAX_SECONDS, 'Lax') };
  }

  /** The portal's page for this browser: the sign-in step, or the connections (audited as `connection.listed`). */
  async view(cookieValue: string | undefined): Promise<PortalView> {
    const { row, brand } = await this.live(cookieValue);
    if (!this.signedIn(row)) {
      const settings = await this.login.settings(row.tenant_id);
      // Read a moment ago as required: it was turned off meanwhile (or is broken): nothing is shown.
      if (!settings)
        throw new FlowPageError(503, 'Not available', 'Please try again in a few minutes.', { brand });
      return {
        kind: 'sign_in',
        brand,
        identityProviderName: settings.idp.name,
        identityProviderOrigin: new URL(settings.idp.issuer).origin,
      };
    }
    const listed = await this.connections.listConnections(userActor(row), row.tenant_id, row.user_id, false);
    const released = await this.audit.lastReleases(
      row.tenant_id,
      listed.map((c) => c.id),
    );
    const names =
      released.size > 0
        ? new Map((await this.connectors.listConnectors(row.tenant_id)).map((c) => [c.id, c.name]))
        : new Map<string, string>();
    const items: PortalConnectionItem[] = [];
    for (const c of listed) {
      const definition = await this.providers.get(row.tenant_id, c.provider);
      const use = released.get(c.id);
      items.push({
        id: c.id,
        providerName: definition?.name ?? c.provider,
        type: c.type,
        status: c.status,
        scopes: definition ? describeScopes(definition, c.scopes) : c.scopes.map((scope) => ({ scope })),
        connectedAt: new Date(c.createdAt),
        lastUsed: use ? { at: use.at, by: (use.connectorId && names.get(use.connectorId)) ?? null } : null,
        reconnect:
          (c.status === 'needs_reauth' || c.status === 'expired') && definition?.authMode === 'oauth2',
      });
    }
    return {
      kind: 'connections',
      brand,
      userId: row.user_id,
      connections: items,
      back: this.back(row, brand)[0] ?? null,
    };
  }

  /** The CSRF token of this browser's forms: derived from its session cookie, which a page elsewhere cannot read. */
  csrfToken(cookieValue: string): string {
    return createHmac('sha256', cookieValue).update('custos portal form').digest('base64url');
  }

  /** Whether a form's CSRF token belongs to this browser's session. */
  csrfValid(cookieValue: string | undefined, given: string | undefined): boolean {
    if (!cookieValue || !given || cookieValue.length > 200 || given.length > 200) return false;
    const [a, b] = [Buffer.from(this.csrfToken(cookieValue)), Buffer.from(given)];
    return a.length === b.length && timingSafeEqual(a, b);
  }

  /** The connection a disconnect or reconnect form names, if it is a live connection of the session's user. */
  private async ownConnection(row: PortalSessionRow, connectionId: string) {
    const mine = await this.connectionRows.listForUser(this.db.manager, row.tenant_id, row.user_id, false);
    const found = mine.find((c) => c.id === connectionId);
    if (!found) {
      throw new FlowPageError(
        404,
        'Connection not found',
        'This connection is not one of yours, or it has been disconnected already. Nothing was changed.',
        { brand: this.brand(row), actions: [this.homeAction()] },
      );
    }
    const definition = await this.providers.get(row.tenant_id, found.provider);
    return {
      connection: connectionView(found),
      providerName: definition?.name ?? found.provider,
      definition,
    };
  }

  /**
   * Disconnects one of the person's connections, once they confirmed: the credential store's revocation (the
   * secrets destroyed now, revocation at the provider queued and started), audited as `connection.revoked`
   * with the user as actor. Without `confirmed`, only says what would happen.
   */
  async disconnect(
    cookieValue: string | undefined,
    connectionId: string,
    confirmed: boolean,
  ): Promise<{ brand: PageBranding; providerName: string; done: boolean; atProvider: boolean }> {
    const { row, brand } = await this.live(cookieValue, true);
    const { providerName } = await this.ownConnection(row, connectionId);
    if (!confirmed) return { brand, providerName, done: false, atProvider: false };
    let providerRevocation: boolean;
    try {
      ({ providerRevocation } = await this.connections.revokeConnection(
        userActor(row),
        row.tenant_id,
        connectionId,
      ));
    } catch (err) {
      // Revoked by someone else since the page was shown.
      if (err instanceof CustosException && err.code === 'not_found') {
        return { brand, providerName, done: true, atProvider: false };
      }
      throw err;
    }
    // The local secret is gone; the provider is told now, in the background (and retried by a job if it is down).
    if (providerRevocation) this.revocations.processDue(connectionId).catch(() => undefined);
    return { brand, providerName, done: true, atProvider: providerRevocation };
  }

  /**
   * Reconnects a connection that needs it: a connect session for the same user and provider (with the
   * connection's scopes where they are valid scope tokens), created by the user; returns its link.
   */
  async reconnect(cookieValue: string | undefined, connectionId: string): Promise<string> {
    const { row, brand } = await this.live(cookieValue, true);
    const { connection, definition, providerName } = await this.ownConnection(row, connectionId);
    if (definition?.authMode !== 'oauth2') {
      throw new FlowPageError(
        400,
        'Cannot reconnect here',
        `${providerName} is not connected by signing in there, so it cannot be reconnected from this page. Ask the app that sent you here.`,
        { brand, actions: [this.homeAction()] },
      );
    }
    const scopes = connection.scopes.every((s) => scopeTokenSchema.safeParse(s).success)
      ? connection.scopes.slice(0, 100)
      : [];
    try {
      const session = await this.connectSessions.createSession(userActor(row), row.tenant_id, {
        userId: row.user_id,
        provider: connection.provider,
        ...(scopes.length > 0 ? { scopes } : {}),
      });
      return session.url;
    } catch (err) {
      if (err instanceof CustosException && err.code === 'provider_not_configured') {
        throw new FlowPageError(
          409,
          'Not available',
          `${providerName} is not set up for ${brand.name} at the moment, so it cannot be reconnected. Nothing was changed. Please tell your administrator.`,
          { brand, actions: [this.homeAction()] },
        );
      }
      throw err;
    }
  }

  /** Starts the sign-in at the tenant's identity provider: returns where to send the browser. */
  async beginSignIn(cookieValue: string | undefined): Promise<string> {
    const { row, brand } = await this.live(cookieValue);
    const settings = await this.login.settings(row.tenant_id);
    if (!settings) {
      throw new FlowPageError(400, 'Not needed', `${brand.name} does not ask you to sign in here.`, {
        brand,
        actions: [this.homeAction()],
      });
    }
    const request = await this.login.signInRequest(settings, this.loginRedirectUri);
    const secrets: PortalLoginSecrets = { codeVerifier: request.codeVerifier, nonce: request.nonce };
    const sealed = await this.dataKeys.seal(row.tenant_id, loginField(row.id), JSON.stringify(secrets));
    await this.sessions.startLogin(row.id, sha256(request.state), sealed);
    return request.url;
  }

  /**
   * The identity provider's answer: it must come back to the browser that started it, and the person must
   * have signed in as the link's user. Then the session moves to a new cookie (the one from before the
   * sign-in stops working) and shows the connections. Audited: `portal_session.user_verified`, or
   * `portal_session.failed` with the reason.
   */
  async completeSignIn(
    query: Record<string, string | undefined>,
    rawQuery: string,
    cookieValue: string | undefined,
  ): Promise<{ setCookie: string }> {
    const unknown = () =>
      new FlowPageError(
        400,
        'Sign-in not recognised',
        'This sign-in response is unknown, used or expired. Go back to the app that sent you here and open your connections from there again.',
      );
    const state = query.state;
    if (!state || state.length > 512) throw unknown();
    const row = await this.sessions.findByLoginStateHash(sha256(state));
    if (!row?.login_secrets || row.expires_at.getTime() <= Date.now()) throw unknown();
    const brand = this.brand(row);
    if (!sameHash(row.browser_hash, cookieValue)) {
      await this.event(row, 'portal_session.failed', 'denied', {
        reason: 'browser_mismatch',
        step: 'sign_in',
      });
      throw new FlowPageError(
        400,
        'Sign-in not recognised',
        'This sign-in was started in another browser or window, so for your safety it was not used. Go back to the app that sent you here and open your connections again in the browser you want to use.',
        { brand },
      );
    }
    const sealed = row.login_secrets;
    if (!(await this.sessions.takeLoginState(row.id, sha256(state)))) throw unknown();
    const secrets = JSON.parse(
      await this.dataKeys.open(row.tenant_id, loginField(row.id), sealed),
    ) as PortalLoginSecrets;
    const settings = await this.login.settings(row.tenant_id);
    if (!settings) {
      throw new FlowPageError(400, 'Not needed', `${brand.name} does not ask you to sign in here.`, {
        brand,
        actions: [this.homeAction()],
      });
    }
    const retry = [{ href: this.home, label: 'Try again' }];
    let user: unknown;
    try {
      user = await this.login.signedInUser(settings, this.loginRedirectUri, rawQuery, {
        state,
        nonce: secrets.nonce,
        codeVerifier: secrets.codeVerifier,
      });
    } catch (err) {
      await this.event(row, 'portal_session.failed', 'failed', {
        reason: signInFailure(err),
        step: 'sign_in',
      });
      throw new FlowPageError(
        502,
        'Sign-in failed',
        `The sign-in at ${settings.idp.name} did not complete, so your connections are not shown. Try again; if it happens again, contact your administrator.`,
        { brand, actions: retry },
      );
    }
    if (user !== row.user_id) {
      await this.event(row, 'portal_session.failed', 'denied', { reason: 'user_mismatch', step: 'sign_in' });
      throw new FlowPageError(
        403,
        'Wrong account',
        `This page was opened for another person, but you signed in to ${settings.idp.name} as someone else, so nothing is shown. If you have more than one account there, sign out of ${settings.idp.name}, then try again and sign in with the right one; otherwise ask for your own link.`,
        { brand, actions: retry },
      );
    }
    const next = randomBytes(32).toString('base64url');
    const ok = await this.db.transaction(async (m) => {
      if (!(await this.sessions.signedIn(m, row.id, sha256(next)))) return false;
      await this.event(
        row,
        'portal_session.user_verified',
        'allowed',
        { identityProvider: settings.idp.name },
        m,
      );
      return true;
    });
    if (!ok) throw unknown();
    const left = Math.max(60, Math.floor((row.expires_at.getTime() - Date.now()) / 1000));
    return { setCookie: cookie(PORTAL_COOKIE, next, left, 'Lax') };
  }

  /** Ends this browser's session (audited as `portal_session.signed_out`); the cookie stops working. */
  async signOut(cookieValue: string | undefined): Promise<{ brand: PageBranding; back: PageAction[] }> {
    const { row, brand } = await this.live(cookieValue);
    await this.sessions.end(row.id);
    await this.event(row, 'portal_session.signed_out', 'allowed', {});
    return { brand, back: this.back(row, brand) };
  }

  /**
   * This browser's live session, or a page saying it has ended. With `signedIn`, also refuses a session
   * whose person has yet to sign in (a form posted before the sign-in).
   */
  private async live(cookieValue: string | undefined, signedIn = false): Promise<LiveSession> {
    const row =
      cookieValue && cookieValue.length <= 200
        ? await this.sessions.touch(sha256(cookieValue), PORTAL_IDLE_SECONDS)
        : undefined;
    if (!row) {
      throw new FlowPageError(
        403,
        'Your session has ended',
        `For your safety, this page closes after ${Math.round(PORTAL_IDLE_SECONDS / 60)} minutes without activity, when you sign out, and after a few hours in any case. Go back to the app that sent you here and open your connections from there again.`,
      );
    }
    const brand = this.brand(row);
    if (signedIn && !this.signedIn(row)) {
      throw new FlowPageError(
        403,
        'Sign in first',
        'Before you can change anything here, you need to sign in so that we know these connections are yours.',
        { brand, actions: [{ href: this.home, label: 'Sign in' }] },
      );
    }
    return { row, brand };
  }

  /** Whether the person may see the session's connections: always, unless the tenant requires sign-in. */
  private signedIn(row: PortalSessionRow): boolean {
    return !row.login_required || row.signed_in_at !== null;
  }

  private brand(row: PortalSessionRow): PageBranding {
    return pageBranding(row, this.config.publicUrl);
  }

  private homeAction(): PageAction {
    return { href: this.home, label: 'Back to your connections' };
  }

  /** "Back to <tenant>", when the link was made with a return address. */
  private back(row: PortalSessionRow, brand: PageBranding): PageAction[] {
    return row.return_to ? [{ href: row.return_to, label: `Back to ${brand.name}` }] : [];
  }

  private async event(
    row: PortalSessionRow | PortalLoginRow,
    action: string,
    outcome: 'allowed' | 'denied' | 'failed',
    details: Record<string, unknown>,
    m?: Parameters<AuditService['record']>[1],
  ): Promise<void> {
    await this.audit.record(
      {
        tenantId: row.tenant_id,
        action,
        outcome,
        actor: userActor(row),
        subjectUserId: row.user_id,
        // Without connectLogin, holding the link is what proves the user.
        details: {
          sessionId: row.id,
          userBinding: row.login_required ? 'identity_provider' : 'link',
          ...details,
        },
      },
      m,
    );
  }
}
