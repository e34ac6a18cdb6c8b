/**
 * Connect sessions: a random one-time token, stored hashed and short-lived, whose URL lets one user connect
 * one provider; the hosted pages (connect-flow.service.ts) consume it.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { Inject, Injectable } from '@nestjs/common';
import { DataSource } from 'typeorm';
import { AuditService, type Actor, type AuditRecord } from '../audit/audit.service.js';
import { CONFIG, type Config } from '../config/config.js';
import { CustosException } from '../common/errors.js';
import { hashKey } from '../identity/admin-keys.service.js';
import { ProviderRegistry } from '../providers/provider-registry.js';
import type { ConnectSessionStatus } from './connect-session.entity.js';
import type { CreateConnectSessionInput } from './connect-sessions.dto.js';

export interface ConnectSessionView {
  id: string;
  userId: string;
  provider: string;
  scopes: string[];
  status: ConnectSessionStatus | 'expired';
  createdAt: string;
  expiresAt: string;
}

/** How long a session is kept after it expired, so that its creator can still read its outcome. */
const RETENTION_AFTER_EXPIRY_S = 3600;
const PRUNE_BATCH = 10_000;

interface SessionRow {
  id: string;
  user_id: string;
  provider: string;
  scopes: string[];
  status: ConnectSessionStatus;
  created_at: Date;
  expires_at: Date;
}

const view = (r: SessionRow): ConnectSessionView => ({
  id: r.id,
  userId: r.user_id,
  provider: r.provider,
  scopes: r.scopes,
  status: r.status === 'pending' && r.expires_at.getTime() <= Date.now() ? 'expired' : r.status,
  createdAt: r.created_at.toISOString(),
  expiresAt: r.expires_at.toISOString(),
});

@Injectable()
export class ConnectSessionsService {
  constructor(
    @Inject(DataSource) private readonly db: DataSource,
    @Inject(AuditService) private readonly audit: AuditService,
    @Inject(ProviderRegistry) private readonly providers: ProviderRegistry,
    @Inject(CONFIG) private readonly config: Config,
  ) {}

  /**
   * Creates a session and its audit event in one transaction; `alsoAudit` adds events to that same
   * transaction (the token endpoint records its consent_required answer with the session it hands out).
   */
  async createSession(
    actor: Actor,
    tenantId: string,
    input: CreateConnectSessionInput,
    alsoAudit: AuditRecord[] = [],
  ): Promise<ConnectSessionView & { url: string }> {
    if (!(await this.providers.get(tenantId, input.provider))) {
      throw new CustosException('unknown_provider', `Unknown provider "${input.provider}"`);
    }
    if (input.returnTo !== undefined) {
      // Exact, byte-for-byte match with the tenant's allow-list: no prefixes, no normalisation.
      const rows: { allowed: boolean }[] = await this.db.query(
        'SELECT $2 = ANY(allowed_return_urls) AS allowed FROM tenants WHERE id = $1',
        [tenantId, input.returnTo],
      );
      if (!rows[0]?.allowed) {
        throw new CustosException(
          'return_url_not_allowed',
          'returnTo is not on the tenant’s allowed return URLs',
        );
      }
    }
    const token = 'cst_' + randomBytes(32).toString('base64url');
    const id = randomUUID();
    const scopes = [...new Set(input.scopes ?? [])];
    const row = await this.db.transaction(async (m) => {
      const rows: SessionRow[] = await m.query(
        `INSERT INTO connect_sessions (id, tenant_id, token_hash, user_id, provider, scopes, return_to, status,
           created_by_type, created_by_id, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $10, 'pending', $7, $8, now() + make_interval(secs => $9))
         RETURNING id, user_id, provider, scopes, status, created_at, expires_at`,
        [
          id,
          tenantId,
          hashKey(token),
          input.userId,
          input.provider,
          scopes,
          actor.type,
          actor.id,
          this.config.connectSessionTtlSeconds,
          input.returnTo ?? null,
        ],
      );
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
      return rows[0];
    });
    return { ...view(row), url: `${this.config.publicUrl}/connect/${token}` };
  }

  /** A session of the tenant; with `createdBy`, only if that actor created it (others are not found). */
  async getSession(tenantId: string, id: string, createdBy?: Actor): Promise<ConnectSessionView> {
    const rows: SessionRow[] = await this.db.query(
      `SELECT id, user_id, provider, scopes, status, created_at, expires_at FROM connect_sessions
        WHERE id = $1 AND tenant_id = $2
          AND ($3::text IS NULL OR (created_by_type = $3 AND created_by_id = $4))`,
      [id, tenantId, createdBy?.type ?? null, createdBy?.id ?? null],
    );
    if (rows.length === 0) throw new CustosException('not_found', 'Connect session not found');
    return view(rows[0]);
  }

  /**
   * Deletes sessions that expired more than an hour ago, whatever their status (the audit trail keeps what
   * happened): each `consent_required` answer creates one, so without this the table grows with traffic. Run
   * by a background job; batches of 10,000 until none is left, at most a million per run.
   */
  async pruneExpired(): Promise<number> {
    let deleted = 0;
    for (let round = 0; round < 100; round++) {
      const res: unknown = await this.db.query(
        `DELETE FROM connect_sessions WHERE id IN (
           SELECT id FROM connect_sessions WHERE expires_at < now() - make_interval(secs => $1) LIMIT $2)`,
        [RETENTION_AFTER_EXPIRY_S, PRUNE_BATCH],
      );
      const n = (res as [unknown, number])[1];
      deleted += n;
      if (n < PRUNE_BATCH) break;
    }
    return deleted;
  }
}
