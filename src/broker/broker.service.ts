/**
 * The token endpoint (RFC 8693 token exchange): a connector authenticates as itself, names the user (a JWT
 * from one of the tenant's identity providers, or a user id if the connector is trusted to assert one) and
 * the provider, and gets back that user's access token or API key. Refresh tokens never leave Custos.
 *
 * The hot path with warm caches costs no key-backend call and a share of two batched statements: the
 * decision read (connector state, identity-provider version and the connection, for all concurrent requests
 * at once, see DecisionBatcher) and the group-committed audit INSERT. A private_key_jwt request reads its
 * decision in its own statement, which also records the assertion's jti. Cached connector registrations and
 * verified user tokens are checked against the versions the decision read returns, so disabling a
 * connector, rotating its secret or changing an identity provider acts on the next request.
 * The credential is released only after its audit event has committed; every denial is audited too.
 *
 * Failed client authentications (and anything refused before the client is authenticated) are counted per
 * claimed client id and per source address; over the limit the answer is 429 `slow_down` with Retry-After,
 * decided from memory before any other work, and denials past a threshold are folded into counted events
 * (see DenialThrottle). Successful requests pay one in-memory lookup and are never counted.
 */
import { Inject, Injectable } from '@nestjs/common';
import type { Logger } from 'pino';
import { decodeJwt } from 'jose';
import { DataSource } from 'typeorm';
import { AuditBatcher } from '../audit/audit-batcher.js';
import {
  auditUnwritable,
  auditUnwritableError,
  type Actor,
  type AuditRecord,
} from '../audit/audit.service.js';
import { DenialThrottle, type DenialVerdict } from '../audit/denial-throttle.js';
import { CommonException, CustosException } from '../common/errors.js';
import { failpoint } from '../common/failpoint.js';
import { CONFIG, type Config } from '../config/config.js';
import { isInfrastructureError } from '../common/infrastructure-error.js';
import { LOGGER } from '../common/logger.js';
import { Metrics } from '../common/metrics.js';
import { addressKey, clientKey, sourceAddress, type Block, type LimitKey } from '../common/rate-limit.js';
import { scopeTokenSchema, textProblem, userIdSchema } from '../common/validation.js';
import { ConnectException } from '../connect/connect.errors.js';
import { ConnectSessionsService } from '../connect/connect-sessions.service.js';
import type { ConnectionType } from '../connections/connection.types.js';
import { ConnectionsService } from '../connections/connections.service.js';
import { minRemainingMs, refreshDueOnRead } from '../connections/refresh-schedule.js';
import { NarrowingRefused, TokenRefresher, type FreshToken } from '../connections/token-refresher.service.js';
import { TenantsRepository } from '../tenants/tenants.repository.js';
import { preparedQuery } from '../database/sql.js';
import { PROVIDER_KEY_PATTERN, type ProviderDefinition } from '../providers/provider-definition.js';
import { ProviderRegistry } from '../providers/provider-registry.js';
import {
  ClientAuthenticator,
  ClientAuthError,
  parseBasicAuth,
  type AuthenticatedClient,
  type ClientAuthInput,
} from '../identity/client-auth.js';
import { DecisionBatcher } from './decision-batcher.js';
import { SubjectTokenError, SubjectTokenVerifier, type VerifiedSubject } from '../identity/subject-token.js';
import { ASSERTION_DECISION_SQL, type DecisionRow } from '../connections/decision-query.js';
import type { ConsentReason, OAuthRefusalCode, TokenOutcome } from './token-outcome.js';

export const TOKEN_EXCHANGE_GRANT = 'urn:ietf:params:oauth:grant-type:token-exchange';
export const JWT_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:jwt';
export const USER_ID_TOKEN_TYPE = 'urn:custos:params:oauth:token-type:user-id';
export const ACCESS_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:access_token';
export const API_KEY_TOKEN_TYPE = 'urn:custos:params:oauth:token-type:api-key';

const MAX_SCOPES = 100;

export interface TokenRequest {
  contentType: string | undefined;
  authorization: string | undefined;
  body: unknown;
  /** The client's address (the socket's, or what a trusted proxy says): failures are limited by it. */
  sourceAddress?: string;
}

/** A refusal in RFC 6749 terms; `reason` is the stable detail written to the audit trail. */
class Refusal extends Error {
  constructor(
    readonly error: OAuthRefusalCode,
    readonly description: string,
    readonly reason: string,
    /** The client authenticated with HTTP Basic and failed: the answer carries a Basic challenge. */
    readonly basicChallenge = false,
  ) {
    super(description);
  }
}

const invalidRequest = (description: string, reason = 'invalid_request') =>
  new Refusal('invalid_request', description, reason);

type Subject =
  { kind: 'jwt'; verified: VerifiedSubject; userId: string } | { kind: 'trusted'; userId: string };

/** A decision row; `assertion_fresh` only in a private_key_jwt request's own read. */
type HotRow = DecisionRow & { assertion_fresh?: number };

@Injectable()
export class BrokerService {
  /** Outcomes since start (for metrics and benchmarks). */
  readonly stats = { released: 0, denied: 0, consentRequired: 0, unavailable: 0, throttled: 0 };

  constructor(
    @Inject(DataSource) private readonly db: DataSource,
    @Inject(ClientAuthenticator) private readonly clients: ClientAuthenticator,
    @Inject(SubjectTokenVerifier) private readonly subjects: SubjectTokenVerifier,
    @Inject(ConnectionsService) private readonly connections: ConnectionsService,
    @Inject(ConnectSessionsService) private readonly sessions: ConnectSessionsService,
    @Inject(ProviderRegistry) private readonly providers: ProviderRegistry,
    @Inject(AuditBatcher) private readonly audit: AuditBatcher,
    @Inject(LOGGER) private readonly log: Logger,
    @Inject(Metrics) private readonly metrics: Metrics,
    @Inject(DecisionBatcher) private readonly decisions: DecisionBatcher,
    @Inject(TokenRefresher) private readonly refresher: TokenRefresher,
    @Inject(DenialThrottle) private readonly throttle: DenialThrottle,
    @Inject(CONFIG) private readonly config: Config,
    @Inject(TenantsRepository) private readonly tenants: TenantsRepository,
  ) {}

  async token(req: TokenRequest): Promise<TokenOutcome> {
    // What the audit event will say; filled in as the request is understood.
    const event: AuditRecord & { details: Record<string, unknown> } = {
      tenantId: null,
      action: 'token.exchange',
      outcome: 'denied',
      actor: { type: 'connector', id: null },
      details: {},
    };
    // From memory, before anything else: a throttled request costs no lookup, hash or audit write.
    const block = this.throttle.gate([addressKey(req.sourceAddress)], 'token');
    if (block) return this.slowDown(block);
    try {
      const outcome = await this.resolveAccessToken(req, event);
      if (outcome.kind === 'released') {
        this.stats.released++;
        this.metrics.tokenRequests.inc({ outcome: 'released' });
      }
      return outcome;
    } catch (err) {
      return this.refuse(err, event, req);
    }
  }

  /**
   * What failures of this request count against: its source address and the client id it claims (from HTTP
   * Basic, a client assertion's `iss` or `client_id`), known to Custos or not.
   */
  private limitKeys(req: TokenRequest): LimitKey[] {
    const address = addressKey(req.sourceAddress);
    const claimed = claimedClientId(req);
    return claimed === undefined ? [address] : [clientKey(claimed), address];
  }

  private slowDown(block: Block): TokenOutcome {
    this.stats.throttled++;
    this.metrics.tokenRequests.inc({ outcome: 'throttled' });
    return { kind: 'throttled', retryAfterSeconds: block.retryAfterSeconds };
  }

  private async resolveAccessToken(
    req: TokenRequest,
    event: AuditRecord & { details: Record<string, unknown> },
  ): Promise<TokenOutcome> {
    const form = readForm(req);
    const authInput: ClientAuthInput = {
      authorization: req.authorization,
      clientId: form.client_id,
      clientSecret: form.client_secret,
      clientAssertion: form.client_assertion,
      clientAssertionType: form.client_assertion_type,
    };
    let client = await this.authenticate(authInput, event);

    if (form.grant_type === undefined) throw invalidRequest('grant_type is required', 'missing_grant_type');
    if (form.grant_type !== TOKEN_EXCHANGE_GRANT) {
      throw new Refusal(
        'unsupported_grant_type',
        `Only ${TOKEN_EXCHANGE_GRANT} is supported`,
        'unsupported_grant_type',
      );
    }
    event.details.grantType = 'token-exchange';
    for (const p of ['actor_token', 'actor_token_type', 'resource'] as const) {
      if (form[p] !== undefined) throw invalidRequest(`${p} is not supported; name the provider in audience`);
    }
    const provider = form.audience;
    if (!provider) throw invalidRequest('audience (the provider key) is required', 'missing_audience');
    // Not a provider key at all: refused without a lookup, and not recorded (it is the caller's text).
    if (!PROVIDER_KEY_PATTERN.test(provider)) {
      throw new Refusal('invalid_target', 'Unknown provider', 'malformed_audience');
    }
    // A catalog provider (or a cached custom one) costs no I/O; a tenant's custom providers are read at most
    // once per cache period.
    const tenantId = client.connector.tenantId;
    const definition =
      this.providers.getCached(tenantId, provider) ?? (await this.providers.get(tenantId, provider));
    event.provider = definition ? provider : null;
    if (!definition) {
      event.details.audience = provider.slice(0, 100);
      throw new Refusal('invalid_target', 'Unknown provider', 'unknown_provider');
    }
    const scopes = parseScope(form.scope);
    event.details.requestedScopes = scopes;
    if (form.requested_token_type !== undefined) {
      const wanted = definition.authMode === 'oauth2' ? ACCESS_TOKEN_TYPE : API_KEY_TOKEN_TYPE;
      if (form.requested_token_type !== wanted) {
        throw invalidRequest(
          `requested_token_type must be ${wanted} for this provider`,
          'requested_token_type',
        );
      }
    }
    if (!form.subject_token) throw invalidRequest('subject_token is required', 'missing_subject_token');
    if (!form.subject_token_type) {
      throw invalidRequest('subject_token_type is required', 'missing_subject_token_type');
    }
    if (form.subject_token_type !== JWT_TOKEN_TYPE && form.subject_token_type !== USER_ID_TOKEN_TYPE) {
      throw invalidRequest('Unsupported subject_token_type', 'unsupported_subject_token_type');
    }

    let subject: Subject | null = null;
    let assertionPending = client.assertion !== null;
    let row: HotRow | undefined;
    for (let attempt = 0; ; attempt++) {
      this.checkPolicy(client, provider, definition, scopes);
      subject ??= await this.subject(client, form.subject_token, form.subject_token_type, event);
      const issuer = subject.kind === 'jwt' ? subject.verified.issuer : null;
      if (assertionPending) {
        // A client assertion is recorded as used in the same statement that reads the decision. It is not
        // batched, so it gets the batches' deadline itself: a silent partition answers 503 as soon.
        const deadline = AbortSignal.timeout(this.config.dbBatchTimeoutMs);
        const rows = await preparedQuery<HotRow>(
          this.db,
          'custos_token_exchange_assertion_v4',
          ASSERTION_DECISION_SQL,
          [
            client.connector.connectorId,
            subject.userId,
            provider,
            issuer,
            client.assertion!.jtiHash,
            client.assertion!.expiresAt,
          ],
          deadline,
        ).catch((err: unknown) => {
          if (!deadline.aborted) throw err;
          const e = new CommonException('temporarily_unavailable', 'The database did not answer in time');
          e.cause = err;
          throw e;
        });
        row = rows[0];
      } else {
        const found = await this.decisions.lookup({
          connectorId: client.connector.connectorId,
          userId: subject.userId,
          provider,
          issuer,
        });
        row = found && { ...found, assertion_fresh: 1 };
      }
      if (assertionPending && row && row.assertion_fresh === 0) {
        throw new Refusal('invalid_client', 'Client authentication failed', 'assertion_replayed');
      }
      assertionPending = false;
      const connectorStale =
        !row || !row.connector_enabled || Number(row.connector_version) !== client.connector.version;
      const idpStale =
        subject.kind === 'jwt' &&
        (!row?.idp_updated_at || row.idp_updated_at.getTime() !== subject.verified.identityProviderVersion);
      if (!connectorStale && !idpStale) break;
      if (attempt >= 2) throw new CommonException('temporarily_unavailable', 'Registration kept changing');
      if (connectorStale) {
        // A disabled, deleted or changed connector: authenticate again against the database.
        this.clients.forget(client.connector.clientId);
        client = await this.authenticate(authInput, event);
      }
      if (idpStale && subject.kind === 'jwt') {
        this.subjects.invalidateIssuer(client.connector.tenantId, subject.verified.issuer);
        subject = null;
      }
    }

    const connector = client.connector;
    let usable = this.usability(row, scopes);
    // An OAuth token that expires soon is refreshed first (one refresh per connection, here and elsewhere).
    let refreshed: FreshToken | null = null;
    const target =
      row?.id && row.type === 'oauth2' && row.status === 'active' && row.has_refresh && row.secret
        ? { id: row.id, expiresAt: row.expires_at, dueAt: row.refresh_due_at }
        : null;
    // Due on the same schedule as the background refresh (so a one-minute token is not refreshed on every read).
    if (
      target &&
      (usable === 'expired' || (usable === 'usable' && refreshDueOnRead(target.expiresAt, target.dueAt)))
    ) {
      try {
        refreshed = await this.refresher.refreshConnection(connector.tenantId, target.id);
        usable = 'usable';
        event.details.refreshed = true;
      } catch (err) {
        if (err instanceof CustosException && err.code === 'conflict') {
          usable = 'needs_reauth';
        } else if (usable === 'expired') {
          // The stored token is no longer usable and no new one could be had: try again later.
          throw err;
        }
        // Otherwise the stored token still has some life: hand it out.
      }
    }
    if (usable !== 'usable') {
      return this.consentRequired(client, subject, provider, scopes, row, usable, event);
    }
    const live = row as HotRow & { id: string; type: ConnectionType; secret: Buffer; scopes: string[] };
    if (refreshed) {
      live.expires_at = refreshed.expiresAt;
      live.scopes = refreshed.scopes;
    }
    event.connectionId = live.id;
    event.details.grantedScopes = live.scopes;
    if (live.type === 'oauth2') {
      const narrowTo = await this.leastPrivilege(client, provider, definition, live, row!, scopes, event);
      if (narrowTo) {
        let token: FreshToken & { cached: boolean };
        try {
          token = await this.refresher.narrowed(connector.tenantId, live.id, narrowTo, live.secret);
        } catch (err) {
          if (err instanceof NarrowingRefused) {
            throw new Refusal('invalid_scope', err.message, 'provider_refused_narrowing');
          }
          // The provider refused the refresh token: the user must reconnect.
          if (err instanceof CustosException && err.code === 'conflict') {
            return this.consentRequired(client, subject, provider, scopes, row, 'needs_reauth', event);
          }
          throw err;
        }
        event.details.narrowedFrom = live.scopes;
        event.details.grantedScopes = token.scopes;
        event.details.narrowed = token.cached ? 'cached' : 'minted';
        return this.releaseCredential(
          event,
          { ...live, expires_at: token.expiresAt, scopes: token.scopes },
          token.accessToken,
        );
      }
    }
    const secret =
      refreshed?.accessToken ??
      (await this.connections.openSecret(connector.tenantId, live.id, live.type, live.secret));
    return this.releaseCredential(event, live, secret);
  }

  /** Fail closed: no credential leaves before its `allowed` event is committed. */
  private async releaseCredential(
    event: AuditRecord & { details: Record<string, unknown> },
    live: { id: string; type: ConnectionType; expires_at: Date | null; scopes: string[] },
    secret: string,
  ): Promise<TokenOutcome> {
    event.outcome = 'allowed';
    await this.audit.write(event).catch(auditUnwritable);
    await failpoint(this.config.failpoints, this.log, 'token.after-audit', { connectionId: live.id });

    if (live.type !== 'oauth2') {
      return { kind: 'released', accessToken: secret, issuedTokenType: API_KEY_TOKEN_TYPE, tokenType: 'N_A' };
    }
    return {
      kind: 'released',
      accessToken: secret,
      issuedTokenType: ACCESS_TOKEN_TYPE,
      tokenType: 'Bearer',
      ...(live.expires_at && {
        expiresIn: Math.max(0, Math.floor((live.expires_at.getTime() - Date.now()) / 1000)),
      }),
      ...(live.scopes.length > 0 && { scope: live.scopes.join(' ') }),
    };
  }

  /**
   * Least privilege per tool: the scopes to mint a narrower token for, or null to hand out the stored one.
   * The token a request gets carries the scopes it asked for (or, asking none, the grant within the
   * connector's allowed scopes). Where the provider can mint a token for a subset of the grant
   * (`narrowsScopesOnRefresh`), a narrower one is minted; where it cannot, the whole grant goes out only if
   * the connector may have all of it, or the tenant opted in to pass-through.
   */
  private async leastPrivilege(
    client: AuthenticatedClient,
    provider: string,
    definition: ProviderDefinition,
    live: { scopes: string[] },
    row: HotRow,
    requested: string[],
    event: AuditRecord & { details: Record<string, unknown> },
  ): Promise<string[] | null> {
    const granted = live.scopes;
    const allowed = client.connector.allowedScopes[provider];
    const target =
      requested.length > 0 ? requested : allowed ? granted.filter((s) => allowed.includes(s)) : granted;
    if (granted.every((s) => target.includes(s))) return null;
    if (definition.oauth2?.narrowsScopesOnRefresh && row.has_refresh && target.length > 0) return target;
    const outside = allowed ? granted.filter((s) => !allowed.includes(s)) : [];
    if (outside.length === 0) return null;
    if (await this.tenants.scopePassThrough(client.connector.tenantId)) {
      event.details.scopePassThrough = true;
      return null;
    }
    throw new Refusal(
      'invalid_scope',
      'The user’s grant is wider than this connector may use, and the provider cannot mint a narrower token',
      'grant_exceeds_connector_scopes',
    );
  }

  private async authenticate(
    input: ClientAuthInput,
    event: AuditRecord & { details: Record<string, unknown> },
  ): Promise<AuthenticatedClient> {
    try {
      const client = await this.clients.authenticate(input);
      const c = client.connector;
      event.tenantId = c.tenantId;
      event.actor = { type: 'connector', id: c.connectorId };
      event.details.clientId = c.clientId;
      event.details.authMethod = client.method;
      return client;
    } catch (err) {
      if (!(err instanceof ClientAuthError)) throw err;
      if (err.connector) {
        event.tenantId = err.connector.tenantId;
        event.actor = { type: 'connector', id: err.connector.connectorId };
        event.details.clientId = err.connector.clientId;
      }
      if (err.unavailable) {
        event.details.reason = err.reason;
        throw new CommonException('temporarily_unavailable', 'The connector’s signing keys are unavailable');
      }
      if (err.malformed) {
        const what =
          err.reason === 'multiple_methods'
            ? 'Use exactly one client authentication method'
            : err.reason === 'unsupported_method'
              ? 'client_secret_post is not supported; use HTTP Basic or private_key_jwt'
              : 'Malformed client authentication';
        throw invalidRequest(what, err.reason);
      }
      throw new Refusal('invalid_client', 'Client authentication failed', err.reason, err.basic);
    }
  }

  /** The connector may use this provider and these scopes (its allowedScopes, when it has a list). */
  private checkPolicy(
    client: AuthenticatedClient,
    provider: string,
    definition: ProviderDefinition,
    scopes: string[],
  ): void {
    const c = client.connector;
    if (!c.allowedProviders.includes(provider)) {
      throw new Refusal('invalid_target', 'This connector may not use that provider', 'provider_not_allowed');
    }
    const allowed = c.allowedScopes[provider];
    if (scopes.length > 0 && definition.authMode !== 'oauth2') {
      throw new Refusal('invalid_scope', 'This provider does not use scopes', 'scopes_not_applicable');
    }
    if (allowed) {
      const outside = scopes.filter((s) => !allowed.includes(s));
      if (outside.length > 0) {
        throw new Refusal(
          'invalid_scope',
          'Scope outside what this connector is allowed',
          'scope_not_allowed',
        );
      }
    }
  }

  private async subject(
    client: AuthenticatedClient,
    token: string,
    type: string,
    event: AuditRecord & { details: Record<string, unknown> },
  ): Promise<Subject> {
    const c = client.connector;
    if (type === USER_ID_TOKEN_TYPE) {
      event.details.subjectTokenType = 'user_id';
      if (c.delegation !== 'trusted') {
        throw invalidRequest('This connector may not assert user ids', 'delegation_not_trusted');
      }
      if (!userIdSchema.safeParse(token).success) {
        throw invalidRequest('subject_token is not a valid user id', 'malformed_user_id');
      }
      event.subjectUserId = token;
      event.details.trustedAssertion = true;
      return { kind: 'trusted', userId: token };
    }
    event.details.subjectTokenType = 'jwt';
    try {
      const verified = await this.subjects.verify(c.tenantId, token);
      event.subjectUserId = verified.userId;
      event.details.trustedAssertion = false;
      event.details.issuer = verified.issuer;
      event.details.identityProvider = verified.identityProvider;
      if (verified.agentClientId) event.details.agentClientId = verified.agentClientId;
      return { kind: 'jwt', verified, userId: verified.userId };
    } catch (err) {
      if (!(err instanceof SubjectTokenError)) throw err;
      if (err.unavailable) {
        event.details.reason = err.reason;
        throw new CommonException('temporarily_unavailable', 'The identity provider’s keys are unavailable');
      }
      throw new Refusal('invalid_grant', err.message, `subject_token_${err.reason}`);
    }
  }

  private usability(
    row: HotRow | undefined,
    scopes: string[],
  ): 'usable' | 'not_connected' | 'needs_reauth' | 'expired' | 'insufficient_scope' {
    if (!row?.id || !row.secret || row.status === 'revoked') return 'not_connected';
    if (row.status === 'needs_reauth') return 'needs_reauth';
    if (row.status === 'expired') return 'expired';
    if (row.type === 'oauth2') {
      // Too close to expiry to hand out (the caller refreshes it when it can).
      if (
        row.expires_at &&
        row.expires_at.getTime() - Date.now() < minRemainingMs(row.expires_at, row.refresh_due_at)
      ) {
        return 'expired';
      }
      const granted = row.scopes ?? [];
      if (scopes.some((s) => !granted.includes(s))) return 'insufficient_scope';
    }
    return 'usable';
  }

  /** 400 consent_required with a fresh connect link, recorded with its event in one transaction. */
  private async consentRequired(
    client: AuthenticatedClient,
    subject: Subject,
    provider: string,
    scopes: string[],
    row: HotRow | undefined,
    why: ConsentReason,
    event: AuditRecord & { details: Record<string, unknown> },
  ): Promise<TokenOutcome> {
    const granted = why === 'insufficient_scope' ? (row?.scopes ?? []) : [];
    const wanted = [...new Set([...granted, ...scopes])];
    if (row?.id) event.connectionId = row.id;
    event.details.reason = 'consent_required';
    event.details.consent = why;
    const actor: Actor = { type: 'connector', id: client.connector.connectorId };
    const session = await this.sessions
      .createSession(actor, client.connector.tenantId, { userId: subject.userId, provider, scopes: wanted }, [
        event,
      ])
      .catch((err: unknown) => {
        // A link to a provider the tenant has not set up could only end in an error page: refused instead.
        if (err instanceof ConnectException && err.code === 'provider_not_configured') {
          throw new Refusal(
            'invalid_target',
            'The user has not connected this provider, and the tenant has not set it up for connecting',
            'provider_not_configured',
          );
        }
        return auditUnwritable(err);
      });
    this.stats.consentRequired++;
    this.metrics.tokenRequests.inc({ outcome: 'consent_required' });
    const descriptions = {
      not_connected: 'The user has not connected this provider',
      needs_reauth: 'The user must reconnect this provider',
      expired: 'The user’s access to this provider has expired; they must reconnect',
      insufficient_scope: 'The user has not granted the requested scope',
    };
    return {
      kind: 'consent_required',
      description: descriptions[why],
      connectUri: session.url,
      expiresIn: Math.max(0, Math.floor((Date.parse(session.expiresAt) - Date.now()) / 1000)),
      sessionId: session.id,
      sessionUri: `${this.config.publicUrl}/v1/tenants/${client.connector.tenantId}/connect/sessions/${session.id}`,
      reason: why,
    };
  }

  /** Turns a refusal or failure into an RFC 6749 error response, after auditing it. */
  private async refuse(
    err: unknown,
    event: AuditRecord & { details: Record<string, unknown> },
    req: TokenRequest,
  ): Promise<TokenOutcome> {
    if (err instanceof Refusal) {
      event.outcome = 'denied';
      event.details.reason = err.reason;
      event.details.error = err.error;
      // Refused before the client was authenticated, or its authentication failed: counted and throttled.
      const unauthenticated = err.error === 'invalid_client' || event.details.authMethod === undefined;
      let verdict: DenialVerdict = 'audit';
      if (unauthenticated) {
        const address = sourceAddress(req.sourceAddress)?.address;
        if (address) event.details.sourceAddress = address;
        const keys = this.limitKeys(req);
        verdict = await this.throttle.failed(keys, {
          endpoint: 'token',
          tenantId: event.tenantId,
          actor: event.actor,
          reason: err.reason,
        });
        const block = this.throttle.overLimit(keys);
        if (block) {
          if (verdict === 'audit') await this.audit.write(event).catch(() => undefined);
          return this.slowDown(block);
        }
      }
      if (verdict === 'audit') {
        try {
          await this.audit.write(event);
        } catch (auditErr) {
          return this.unavailable(auditUnwritableError(auditErr), event);
        }
      }
      this.stats.denied++;
      this.metrics.tokenRequests.inc({ outcome: 'denied' });
      return {
        kind: 'refused',
        error: err.error,
        description: err.description,
        basicChallenge: err.basicChallenge,
      };
    }
    return this.unavailable(err, event);
  }

  /** 503 for a key backend or infrastructure failure; never a credential, never 401. */
  private async unavailable(
    err: unknown,
    event: AuditRecord & { details: Record<string, unknown> },
  ): Promise<TokenOutcome> {
    this.stats.unavailable++;
    this.metrics.tokenRequests.inc({ outcome: 'unavailable' });
    const keyProblem =
      err instanceof CustosException && (err.code === 'key_unavailable' || err.code === 'key_invalid');
    const known =
      keyProblem ||
      (err instanceof CustosException && err.code === 'temporarily_unavailable') ||
      isInfrastructureError(err);
    const e = err as { name?: string; code?: unknown; stack?: string };
    if (!known)
      this.log.error({ err: { name: e?.name, code: e?.code, stack: e?.stack } }, 'token request failed');
    else this.log.warn({ err: { name: e?.name, code: e?.code } }, 'token request could not be served');
    // Try to leave a trace of the failure; the answer is 503 whether or not this works.
    if (event.tenantId !== null || event.actor.id !== null) {
      event.outcome = 'failed';
      event.details.error = keyProblem ? 'key_unavailable' : 'temporarily_unavailable';
      this.audit.write(event).catch(() => undefined);
    }
    return known ? { kind: 'unavailable', keyBackend: keyProblem } : { kind: 'failed' };
  }
}

/** The client id a request claims, unverified, for counting its failures (never trusted for anything else). */
function claimedClientId(req: TokenRequest): string | undefined {
  if (req.authorization !== undefined && /^Basic /i.test(req.authorization)) {
    return parseBasicAuth(req.authorization)?.clientId;
  }
  const body = (req.body ?? {}) as Record<string, unknown>;
  if (typeof body.client_assertion === 'string') {
    try {
      const iss = decodeJwt(body.client_assertion).iss;
      if (typeof iss === 'string') return iss;
    } catch {
      // Not a JWT: its failure counts against the address only (and the client_id it names, if any).
    }
  }
  return typeof body.client_id === 'string' && body.client_id !== '' ? body.client_id : undefined;
}

/** The form as single-valued strings: RFC 6749 §3.2 forbids repeating a parameter. */
function readForm(req: TokenRequest): Record<string, string | undefined> {
  const type = (req.contentType ?? '').split(';')[0].trim().toLowerCase();
  if (type !== 'application/x-www-form-urlencoded') {
    throw invalidRequest('The body must be application/x-www-form-urlencoded', 'content_type');
  }
  const body = req.body ?? {};
  if (typeof body !== 'object') throw invalidRequest('Malformed form body', 'malformed_body');
  const form: Record<string, string | undefined> = {};
  for (const [k, v] of Object.entries(body as Record<string, unknown>)) {
    // Only a plain parameter name is echoed back; anything else is the caller's text.
    const name = /^[a-z_]{1,40}$/.test(k) ? `Parameter ${k}` : 'A parameter';
    if (Array.isArray(v)) throw invalidRequest(`${name} is repeated`, 'repeated_parameter');
    if (typeof v !== 'string') throw invalidRequest('Malformed form body', 'malformed_body');
    // The shared string rule for every parameter, used or not: nothing below sees NUL, a lone surrogate or
    // a control character, and neither do the database and the audit trail.
    const problem = textProblem(k) ?? textProblem(v);
    if (problem) throw invalidRequest(`${name} ${problem}`, 'malformed_parameter');
    // RFC 6749: parameters sent without a value are treated as omitted.
    if (v !== '') form[k] = v;
  }
  return form;
}

function parseScope(scope: string | undefined): string[] {
  if (scope === undefined) return [];
  const list = scope.split(' ').filter((s) => s !== '');
  if (list.length > MAX_SCOPES) throw new Refusal('invalid_scope', 'Too many scopes', 'too_many_scopes');
  for (const s of list) {
    if (!scopeTokenSchema.safeParse(s).success) {
      throw new Refusal('invalid_scope', 'Malformed scope', 'malformed_scope');
    }
  }
  return [...new Set(list)];
}
