/**
 * Connect sessions: a random one-time token, stored hashed and short-lived, whose URL lets one user connect
 * one provider; the hosted pages (connect-flow.service.ts) consume it.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { Inject, Injectable } from '@nestjs/common';
import { DataSource } from 'typeorm';
import { AuditService, type Actor, type AuditRecord } from '../audit/audit.service.js';
import { CONFIG, type Config } from '../config/config.js';
import { CommonException } from '../common/errors.js';
import { hashKey } from '../identity/admin-keys.service.js';
import { ProviderAppsService } from '../providers/provider-apps.service.js';
import { ProviderRegistry } from '../providers/provider-registry.js';
import { TenantsRepository } from '../tenants/tenants.repository.js';
import type { CreateConnectSessionInput } from './connect-sessions.dto.js';
import { ConnectSessionsRepository, type ConnectSessionRow } from './connect-sessions.repository.js';
import { ProviderException } from '../providers/providers.errors.js';
import { ConnectException } from './connect.errors.js';

/**
 * Where a session stands, as the admin API shows it:
 * - `pending`: not used yet, or started and not finished; the link works until `expiresAt`.
 * - `declined`: the person's last attempt was declined at the provider; the link still works until `expiresAt`
 *   (they may try again), so this can still become `completed`.
 * - `failed`: the last attempt failed (`failureReason` says why); the link still works until `expiresAt`,
 *   except with `provider_deleted` (the tenant deleted the provider: the link is closed for good).
 * - `completed`: connected; the link is spent.
 * - `expired`: the link expired without connecting (`failureReason` keeps its last attempt's reason, if any).
 */
export type ConnectSessionViewStatus = 'pending' | 'declined' | 'failed' | 'completed' | 'expired';

export interface ConnectSessionView {
  id: string;
  userId: string;
  provider: string;
  scopes: string[];
  status: ConnectSessionViewStatus;
  /** Why the last attempt did not connect (a stable code: `access_denied`, `invalid_grant`, …), else null. */
  failureReason: string | null;
  createdAt: string;
  expiresAt: string;
}

function statusOf(r: ConnectSessionRow): ConnectSessionViewStatus {
  if (r.status !== 'pending') return r.status;
  if (r.expires_at.getTime() <= Date.now()) return 'expired';
  return r.last_outcome ?? 'pending';
}

/** How long a session is kept after it expired, so that its creator can still read its outcome. */
const RETENTION_AFTER_EXPIRY_S = 3600;
const PRUNE_BATCH = 10_000;

const view = (r: ConnectSessionRow): ConnectSessionView => ({
  id: r.id,
  userId: r.user_id,
  provider: r.provider,
  scopes: r.scopes,
  status: statusOf(r),
  failureReason: r.status === 'completed' ? null : r.last_error,
  createdAt: r.created_at.toISOString(),
  expiresAt: r.expires_at.toISOString(),
});

@Injectable()
export class ConnectSessionsService {
  constructor(
    @Inject(DataSource) private readonly db: DataSource,
    @Inject(ConnectSessionsRepository) private readonly sessions: ConnectSessionsRepository,
    @Inject(TenantsRepository) private readonly tenants: TenantsRepository,
    @Inject(AuditService) private readonly audit: AuditService,
    @Inject(ProviderRegistry) private readonly providers: ProviderRegistry,
    @Inject(ProviderAppsService) private readonly apps: ProviderAppsService,
    @Inject(CONFIG) private readonly config: Config,
  ) {}

  /**
   * Creates a session and its audit event in one transaction; `alsoAudit` adds events to that same
   * transaction (the token endpoint records its consent_required answer with the session it hands out).
   * A session for an OAuth provider the tenant has no app for is refused here (`provider_not_configured`):
   * its link could only end in an error page.
   */
  async createSession(
    actor: Actor,
    tenantId: string,
    input: CreateConnectSessionInput,
    alsoAudit: AuditRecord[] = [],
  ): Promise<ConnectSessionView & { url: string }> {
    const definition = await this.providers.get(tenantId, input.provider);
    if (!definition) {
      throw new ProviderException('unknown_provider', `Unknown provider "${input.provider}"`);
    }
    if (definition.authMode === 'oauth2' && !(await this.hasApp(tenantId, input.provider))) {
      throw new ConnectException(
        'provider_not_configured',
        `${definition.name} is not set up for this tenant: register its OAuth app first (PUT /v1/tenants/${tenantId}/providers/${input.provider}/app)`,
        { provider: input.provider },
      );
    }
    if (input.returnTo !== undefined) {
      // Exact, byte-for-byte match with the tenant's allow-list: no prefixes, no normalisation.
      if (!(await this.tenants.allowsReturnUrl(tenantId, input.returnTo))) {
        throw new ConnectException(
          'return_url_not_allowed',
          'returnTo is not on the tenant’s allowed return URLs',
        );
      }
    }
    const token = 'cst_' + randomBytes(32).toString('base64url');
    const id = randomUUID();
    const scopes = [...new Set(input.scopes ?? [])];
    const row = await this.db.transaction(async (m) => {
      const created = await this.sessions.insert(m, {
        id,
        tenantId,
        tokenHash: hashKey(token),
        userId: input.userId,
        provider: input.provider,
        scopes,
        returnTo: input.returnTo ?? null,
        createdBy: actor,
        ttlSeconds: this.config.connectSessionTtlSeconds,
      });
      await this.audit.record(
        {
          tenantId,
          action: 'connect_session.created',
          outcome: 'allowed',
          actor,
          subjectUserId: input.userId,
          provider: input.provider,
          details: { sessionId: id, scopes },
        },
        m,
      );
      for (const event of alsoAudit) {
        await this.audit.record({ ...event, details: { ...event.details, connectSessionId: id } }, m);
      }
      return created;
    });
    return { ...view(row), url: `${this.config.publicUrl}/connect/${token}` };
  }

  /** Whether the tenant has its own OAuth app at the provider. */
  private async hasApp(tenantId: string, provider: string): Promise<boolean> {
    try {
      await this.apps.get(tenantId, provider);
      return true;
    } catch (err) {
      if (err instanceof CommonException && err.code === 'not_found') return false;
      throw err;
    }
  }

  /** A session of the tenant; with `createdBy`, only if that actor created it (others are not found). */
  async getSession(tenantId: string, id: string, createdBy?: Actor): Promise<ConnectSessionView> {
    const row = await this.sessions.find(tenantId, id, createdBy);
    if (!row) throw new CommonException('not_found', 'Connect session not found');
    return view(row);
  }

  /**
   * Deletes sessions that expired more than an hour ago, whatever their status (the audit trail keeps what
   * happened): each `consent_required` answer creates one, so without this the table grows with traffic. Run
   * by a background job; batches of 10,000 until none is left, at most a million per run.
   */
  async pruneExpired(): Promise<number> {
    let deleted = 0;
    for (let round = 0; round < 100; round++) {
      const n = await this.sessions.deleteExpired(RETENTION_AFTER_EXPIRY_S, PRUNE_BATCH);
      deleted += n;
      if (n < PRUNE_BATCH) break;
    }
    return deleted;
  }
}
