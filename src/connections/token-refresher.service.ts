/**
 * Refreshes a connection's access token without ever losing it, also with providers that rotate refresh
 * tokens (a used refresh token dies at once):
 *
 * - Within a process, concurrent callers for one connection share one refresh.
 * - Across processes, a short lease on the connection's row in PostgreSQL (taken and the row re-read in one
 *   statement) makes one holder; the others wait for its result by re-reading the row.
 * - The holder re-reads first (someone may have refreshed already), calls the provider, and writes the new
 *   token set with a version check, committing before anything else happens. A response without a refresh
 *   token keeps the old one.
 * - `invalid_grant` marks the connection `needs_reauth` at once (audited, and a webhook when configured);
 *   after a lease abandoned by a crash, the reason says "refresh interrupted". Transient failures release the
 *   lease and leave the stored token in place.
 */
import { randomUUID } from 'node:crypto';
import { Inject, Injectable } from '@nestjs/common';
import type { Logger } from 'pino';
import { DataSource } from 'typeorm';
import { AuditService, systemActor } from '../audit/audit.service.js';
import { CustosException } from '../common/errors.js';
import { LOGGER } from '../common/logger.js';
import { ProviderOAuthClient } from '../connect/oauth-client.js';
import { DataKeyService } from '../crypto/data-key.service.js';
import { readEnvelopeHeader } from '../crypto/envelope.js';
import { parseRetryAfter, refreshDueAt, retryDelayMs } from './refresh-schedule.js';
import { returned } from '../database/sql.js';
import { ProviderAppsService } from '../providers/provider-apps.service.js';
import { ProviderRegistry } from '../providers/provider-registry.js';
import { WebhooksService } from '../tenants/webhooks.service.js';

const LEASE_SECONDS = 30;
/** Sweep refreshes in flight at once per provider. */
export const PER_PROVIDER_CONCURRENCY = 4;
const WAIT_STEP_MS = 50;
/** A token with less life than this is refreshed before it is handed out. */
export const REFRESH_MARGIN_MS = 60_000;

export interface FreshToken {
  accessToken: string;
  expiresAt: Date | null;
  scopes: string[];
}

interface LeasedRow {
  id: string;
  tenant_id: string;
  user_id: string;
  provider: string;
  status: string;
  version: number;
  expires_at: Date | null;
  scopes: string[];
  secret: Buffer | null;
  refresh_token: Buffer | null;
  refresh_failures: number;
  refresh_retry_at: Date | null;
  refresh_due_at: Date | null;
  /** The previous lease had expired without being released (a crash mid-refresh). */
  interrupted: boolean;
}

const field = (connectionId: string, name: 'access_token' | 'refresh_token') => ({
  scope: 'connection',
  recordId: connectionId,
  field: name,
});

@Injectable()
export class TokenRefresher {
  private readonly owner = randomUUID();
  private readonly inflight = new Map<string, Promise<FreshToken>>();
  /** Provider refresh calls made by this process (tests, metrics). */
  providerCalls = 0;
  private readonly inFlightByProvider = new Map<string, number>();
  /** The most sweep refreshes of one provider in flight at once (tests, metrics). */
  readonly peakInFlightByProvider = new Map<string, number>();

  constructor(
    @Inject(DataSource) private readonly db: DataSource,
    @Inject(DataKeyService) private readonly dataKeys: DataKeyService,
    @Inject(ProviderRegistry) private readonly providers: ProviderRegistry,
    @Inject(ProviderAppsService) private readonly apps: ProviderAppsService,
    @Inject(ProviderOAuthClient) private readonly oauth: ProviderOAuthClient,
    @Inject(AuditService) private readonly audit: AuditService,
    @Inject(WebhooksService) private readonly webhooks: WebhooksService,
    @Inject(LOGGER) private readonly log: Logger,
  ) {}

  /** A fresh access token for the connection; one refresh per connection at a time, here and everywhere. */
  refresh(tenantId: string, connectionId: string): Promise<FreshToken> {
    let pending = this.inflight.get(connectionId);
    if (!pending) {
      pending = this.run(tenantId, connectionId).finally(() => this.inflight.delete(connectionId));
      this.inflight.set(connectionId, pending);
    }
    return pending;
  }

  /** Refreshes active connections whose tokens expire within the margin (the background sweep). */
  async sweep(limit = 500): Promise<number> {
    const due: { id: string; tenant_id: string; provider: string }[] = await this.db.query(
      `SELECT id, tenant_id, provider FROM connections
        WHERE refresh_due_at <= now() AND status = 'active' AND type = 'oauth2' AND revoked_at IS NULL
          AND refresh_token IS NOT NULL AND (refresh_retry_at IS NULL OR refresh_retry_at <= now())
          AND (refresh_lease_until IS NULL OR refresh_lease_until < now())
        ORDER BY refresh_due_at LIMIT $1`,
      [limit],
    );
    // Due refreshes run concurrently, with a cap per provider so that one provider's outage (every call
    // waiting for its timeout) cannot take all the slots from the others.
    const queues = new Map<string, { id: string; tenant_id: string }[]>();
    for (const c of due) {
      const q = queues.get(c.provider) ?? [];
      q.push(c);
      queues.set(c.provider, q);
    }
    let refreshed = 0;
    await Promise.all(
      [...queues.entries()].map(async ([provider, queue]) => {
        const worker = async () => {
          for (let c = queue.shift(); c; c = queue.shift()) {
            const inFlight = (this.inFlightByProvider.get(provider) ?? 0) + 1;
            this.inFlightByProvider.set(provider, inFlight);
            this.peakInFlightByProvider.set(
              provider,
              Math.max(this.peakInFlightByProvider.get(provider) ?? 0, inFlight),
            );
            try {
              await this.refresh(c.tenant_id, c.id);
              refreshed++;
            } catch {
              // Recorded by the refresh (backoff, needs_reauth); the next sweep tries again when due.
            } finally {
              this.inFlightByProvider.set(provider, (this.inFlightByProvider.get(provider) ?? 1) - 1);
            }
          }
        };
        await Promise.all(Array.from({ length: Math.min(PER_PROVIDER_CONCURRENCY, queue.length) }, worker));
      }),
    );
    return refreshed;
  }

  private async run(tenantId: string, connectionId: string): Promise<FreshToken> {
    for (let waited = 0; ; waited += WAIT_STEP_MS) {
      const leased = await this.lease(tenantId, connectionId);
      if (leased) return this.refreshLeased(leased);
      // Another process holds the lease: wait for its result.
      const current = await this.current(tenantId, connectionId);
      if (current) return current;
      if (waited > (LEASE_SECONDS + 5) * 1000) {
        throw new CustosException('temporarily_unavailable', 'A refresh of this connection is stuck');
      }
      await new Promise((r) => setTimeout(r, WAIT_STEP_MS));
    }
  }

  /** Takes the lease and re-reads the row in one statement; null when someone else holds it. */
  private async lease(tenantId: string, connectionId: string): Promise<LeasedRow | null> {
    const rows = returned<LeasedRow>(
      await this.db.query(
        `UPDATE connections c SET refresh_lease_until = now() + make_interval(secs => $3), refresh_lease_owner = $4
          FROM (SELECT id, refresh_lease_until AS previous FROM connections WHERE id = $1 AND tenant_id = $2 FOR UPDATE) p
          WHERE c.id = p.id AND (p.previous IS NULL OR p.previous < now())
          RETURNING c.id, c.tenant_id, c.user_id, c.provider, c.status, c.version, c.expires_at, c.scopes, c.secret,
                    c.refresh_token, c.refresh_failures, c.refresh_retry_at, c.refresh_due_at,
                    (p.previous IS NOT NULL) AS interrupted`,
        [connectionId, tenantId, LEASE_SECONDS, this.owner],
      ),
    );
    return rows[0] ?? null;
  }

  /** The stored token when it is fresh and nobody is refreshing it. */
  private async current(tenantId: string, connectionId: string): Promise<FreshToken | null> {
    const rows: {
      status: string;
      expires_at: Date | null;
      scopes: string[];
      secret: Buffer | null;
      leased: boolean;
    }[] = await this.db.query(
      `SELECT status, expires_at, scopes, secret, (refresh_lease_until IS NOT NULL AND refresh_lease_until >= now()) AS leased
           FROM connections WHERE id = $1 AND tenant_id = $2`,
      [connectionId, tenantId],
    );
    const r = rows[0];
    if (!r) throw new CustosException('not_found', 'Connection not found');
    if (r.status === 'needs_reauth')
      throw new CustosException('conflict', 'The connection needs re-authorization');
    if (r.leased || !r.secret || !fresh(r.expires_at)) return null;
    return {
      accessToken: await this.dataKeys.open(tenantId, field(connectionId, 'access_token'), r.secret),
      expiresAt: r.expires_at,
      scopes: r.scopes,
    };
  }

  private async refreshLeased(row: LeasedRow): Promise<FreshToken> {
    const release = () =>
      this.db.query(
        'UPDATE connections SET refresh_lease_until = NULL, refresh_lease_owner = NULL WHERE id = $1 AND refresh_lease_owner = $2',
        [row.id, this.owner],
      );
    try {
      if (row.status !== 'active' || !row.secret) {
        throw new CustosException('conflict', 'The connection is not active');
      }
      // Neither due nor close to expiry: someone refreshed while we waited for the lease.
      if (fresh(row.expires_at) && !(row.refresh_due_at && row.refresh_due_at.getTime() <= Date.now())) {
        await release();
        return {
          accessToken: await this.dataKeys.open(row.tenant_id, field(row.id, 'access_token'), row.secret),
          expiresAt: row.expires_at,
          scopes: row.scopes,
        };
      }
      if (!row.refresh_token) throw new CustosException('conflict', 'The connection has no refresh token');
      // Backing off after a failure (or as the provider asked): no provider call before the retry time.
      if (row.refresh_retry_at && row.refresh_retry_at.getTime() > Date.now()) {
        throw new CustosException(
          'temporarily_unavailable',
          'Refresh is backing off after a provider failure',
          {
            retryAt: row.refresh_retry_at.toISOString(),
          },
        );
      }
      const definition = await this.providers.get(row.tenant_id, row.provider);
      const app = await this.apps.open(row.tenant_id, row.provider);
      if (!definition?.oauth2 || !app) {
        throw new CustosException('temporarily_unavailable', 'No OAuth app is configured for this provider');
      }
      const refreshToken = await this.dataKeys.open(
        row.tenant_id,
        field(row.id, 'refresh_token'),
        row.refresh_token,
      );
      let next: Awaited<ReturnType<ProviderOAuthClient['refresh']>>;
      try {
        this.providerCalls++;
        next = await this.oauth.refresh(definition, app, refreshToken);
      } catch (err) {
        if ((err as { error?: string }).error === 'invalid_grant') {
          await this.needsReauth(row, row.interrupted ? 'refresh interrupted' : 'refresh token rejected');
          throw new CustosException('conflict', 'The connection needs re-authorization');
        }
        const reason =
          (err as { error?: string; code?: string }).error ??
          (err as { code?: string }).code ??
          'unreachable';
        // Back off before the next attempt (or as long as the provider asked), so an outage is not hammered.
        const delay = retryDelayMs(row.refresh_failures + 1, retryAfterOf(err));
        await this.db.query(
          `UPDATE connections SET refresh_failures = refresh_failures + 1,
             refresh_retry_at = now() + make_interval(secs => $2) WHERE id = $1`,
          [row.id, delay / 1000],
        );
        throw new CustosException('temporarily_unavailable', 'The provider could not refresh the token', {
          reason,
        });
      }
      // Commit the new token set first; nothing else happens before it is durable.
      const secret = await this.dataKeys.seal(row.tenant_id, field(row.id, 'access_token'), next.accessToken);
      const refresh = next.refreshToken
        ? await this.dataKeys.seal(row.tenant_id, field(row.id, 'refresh_token'), next.refreshToken)
        : null;
      const scopes = next.scopes ?? row.scopes;
      await this.db.transaction(async (m) => {
        const written = returned<{ id: string }>(
          await m.query(
            `UPDATE connections SET secret = $3, refresh_token = COALESCE($4, refresh_token), expires_at = $5,
               scopes = $6, data_key_id = $7, refresh_due_at = $8, refresh_failures = 0, refresh_retry_at = NULL,
               version = version + 1, updated_at = now(), refresh_lease_until = NULL, refresh_lease_owner = NULL
             WHERE id = $1 AND version = $2 RETURNING id`,
            [
              row.id,
              row.version,
              secret,
              refresh,
              next.expiresAt,
              scopes,
              readEnvelopeHeader(secret).dataKeyId,
              refreshDueAt(new Date(), next.expiresAt),
            ],
          ),
        );
        if (written.length === 0)
          throw new CustosException('conflict', 'The connection changed during the refresh');
        await this.audit.record(
          {
            tenantId: row.tenant_id,
            action: 'connection.refreshed',
            outcome: 'allowed',
            actor: systemActor,
            subjectUserId: row.user_id,
            connectionId: row.id,
            provider: row.provider,
            details: { rotated: refresh !== null, expiresAt: next.expiresAt.toISOString() },
          },
          m,
        );
      });
      return { accessToken: next.accessToken, expiresAt: next.expiresAt, scopes };
    } catch (err) {
      await release().catch(() => undefined);
      if (!(err instanceof CustosException)) throw err;
      this.log.warn({ connectionId: row.id, provider: row.provider, code: err.code }, 'token refresh failed');
      throw err;
    }
  }

  private async needsReauth(row: LeasedRow, reason: string): Promise<void> {
    await this.db.transaction(async (m) => {
      await m.query(
        `UPDATE connections SET status = 'needs_reauth', version = version + 1, updated_at = now(),
           refresh_lease_until = NULL, refresh_lease_owner = NULL WHERE id = $1`,
        [row.id],
      );
      await this.audit.record(
        {
          tenantId: row.tenant_id,
          action: 'connection.needs_reauth',
          outcome: 'failed',
          actor: systemActor,
          subjectUserId: row.user_id,
          connectionId: row.id,
          provider: row.provider,
          details: { reason },
        },
        m,
      );
    });
    this.webhooks.notify(row.tenant_id, 'connection.needs_reauth', {
      connectionId: row.id,
      userId: row.user_id,
      provider: row.provider,
      reason,
    });
  }
}

/** The provider's Retry-After, from openid-client's error shapes (4xx: err.response; 5xx: err.cause). */
function retryAfterOf(err: unknown): number | null {
  const e = err as { response?: { headers?: Headers }; cause?: unknown };
  const headers = e.response?.headers ?? (e.cause instanceof Response ? e.cause.headers : undefined);
  return parseRetryAfter(headers?.get('retry-after'));
}

function fresh(expiresAt: Date | null): boolean {
  return expiresAt === null || expiresAt.getTime() - Date.now() > REFRESH_MARGIN_MS;
}
