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
 * - A refresh that loses a race to a credential written meanwhile (a new connect or import) is superseded, not
 *   a failure: its answer is dropped (the provider's `invalid_grant` for the old refresh token, or a token set
 *   for a row that has moved on), nothing is marked, and a read is served from the row as it now is.
 * - Background refreshes (`refreshDue`) never wait for another holder: whoever holds the lease does the work.
 *   They run under a limiter (in all, and per provider) in this process.
 */
import { createHash, randomUUID } from 'node:crypto';
import { Inject, Injectable } from '@nestjs/common';
import type { Logger } from 'pino';
import { LRUCache } from 'lru-cache';
import { Histogram } from 'prom-client';
import { DataSource } from 'typeorm';
import { AuditService, systemActor } from '../audit/audit.service.js';
import { CommonException, CustosException } from '../common/errors.js';
import { failpoint } from '../common/failpoint.js';
import { CONFIG, type Config } from '../config/config.js';
import { LOGGER } from '../common/logger.js';
import { Metrics } from '../common/metrics.js';
import { ProviderOAuthClient } from '../providers/oauth-client.js';
import { DataKeyService } from '../crypto/data-key.service.js';
import { readEnvelopeHeader, sealField } from '../crypto/envelope.js';
import { RefreshJobs, RefreshLimiter, type DueRefresh } from '../jobs/refresh-jobs.js';
import { parseRetryAfter, refreshDueAt, refreshDueOnRead, retryDelayMs } from './refresh-schedule.js';
import { ProviderAppsService } from '../providers/provider-apps.service.js';
import { ProviderRegistry } from '../providers/provider-registry.js';
import { WebhooksService } from '../tenants/webhooks.service.js';
import { ConnectionsRepository, type LeasedRow } from './connections.repository.js';

const WAIT_STEP_MS = 50;
/** Times a read re-reads the row after its refresh was superseded by a write, before answering 503. */
const MAX_SUPERSEDED = 3;

/** A refresh whose row was written by someone else meanwhile (its version moved on): nothing to record. */
class RefreshSuperseded extends Error {
  constructor(readonly connectionId: string) {
    super('The connection was written during the refresh');
  }
}

/** The provider refused (invalid_scope) to mint an access token for the subset of the grant asked for. */
export class NarrowingRefused extends Error {
  constructor() {
    super('The provider refused to mint a token for these scopes');
  }
}

export interface FreshToken {
  accessToken: string;
  expiresAt: Date | null;
  scopes: string[];
}

/** Narrowed tokens kept per process (connection × scope set), each until shortly before it expires. */
const NARROWED_CACHE_ENTRIES = 10_000;

interface NarrowedEntry extends FreshToken {
  /** SHA-256 of the stored access token's ciphertext when it was minted: any write to the connection retires it. */
  stored: Buffer;
  /** Handed out until then: a margin before expiry of a tenth of its life at mint time, at most a minute. */
  until: number;
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
  private readonly narrowing = new Map<string, Promise<FreshToken>>();
  private readonly narrowedCache = new LRUCache<string, NarrowedEntry>({ max: NARROWED_CACHE_ENTRIES });
  /** Provider refresh calls made by this process (tests, metrics). */
  providerCalls = 0;
  /** Background refreshes in flight in this process: in all, and per provider. */
  readonly limiter: RefreshLimiter;
  private readonly leaseSeconds: number;
  private readonly lag: Histogram<'trigger'>;

  constructor(
    @Inject(CONFIG) private readonly config: Config,
    @Inject(RefreshJobs) private readonly jobs: RefreshJobs,
    @Inject(DataSource) private readonly db: DataSource,
    @Inject(ConnectionsRepository) private readonly rows: ConnectionsRepository,
    @Inject(DataKeyService) private readonly dataKeys: DataKeyService,
    @Inject(ProviderRegistry) private readonly providers: ProviderRegistry,
    @Inject(ProviderAppsService) private readonly apps: ProviderAppsService,
    @Inject(ProviderOAuthClient) private readonly oauth: ProviderOAuthClient,
    @Inject(AuditService) private readonly audit: AuditService,
    @Inject(WebhooksService) private readonly webhooks: WebhooksService,
    @Inject(LOGGER) private readonly log: Logger,
    @Inject(Metrics) private readonly metrics: Metrics,
  ) {
    this.limiter = new RefreshLimiter(config.refreshConcurrency, config.refreshPerProvider);
    this.leaseSeconds = config.refreshLeaseSeconds;
    this.lag = new Histogram({
      name: 'custos_token_refresh_lag_seconds',
      help: 'How late a due refresh reached the provider (after its due time, or its retry time after a failure), by trigger: background (refresh-ahead), read (a request found the token due).',
      labelNames: ['trigger'] as const,
      buckets: [0.1, 0.5, 1, 5, 10, 30, 60, 120, 300, 600, 1800, 3600],
      registers: [metrics.registry],
    });
  }

  /** A fresh access token for the connection; one refresh per connection at a time, here and everywhere. */
  refreshConnection(tenantId: string, connectionId: string): Promise<FreshToken> {
    let pending = this.inflight.get(connectionId);
    if (!pending) {
      pending = this.run(tenantId, connectionId).finally(() => this.inflight.delete(connectionId));
      this.inflight.set(connectionId, pending);
    }
    return pending;
  }

  /**
   * An access token for a subset of the connection's grant, minted by a refresh_token grant naming `scopes`
   * (RFC 6749 §6), for a provider that declares `narrowsScopesOnRefresh`. It is never stored as the
   * connection's token and never wider than asked: an answer with a scope outside `scopes` is dropped. Kept in
   * this process until shortly before it expires, for as long as the connection's stored token is the one it
   * was minted next to (`storedSecret`, the ciphertext the caller read); one mint per connection and scope set
   * at a time. A provider that returns a new refresh token has it stored (under the refresh lease, like any
   * refresh), so narrowing works with rotating refresh tokens too.
   */
  async narrowed(
    tenantId: string,
    connectionId: string,
    scopes: string[],
    storedSecret: Buffer,
  ): Promise<FreshToken & { cached: boolean }> {
    const wanted = [...new Set(scopes)].sort();
    const key = `${connectionId} ${wanted.join(' ')}`;
    const stored = createHash('sha256').update(storedSecret).digest();
    const hit = this.narrowedCache.get(key);
    if (hit && hit.stored.equals(stored) && hit.until > Date.now()) {
      return { accessToken: hit.accessToken, expiresAt: hit.expiresAt, scopes: hit.scopes, cached: true };
    }
    let pending: Promise<FreshToken> | undefined = this.narrowing.get(key);
    if (!pending) {
      pending = this.runNarrow(tenantId, connectionId, wanted)
        .then((token) => {
          this.narrowedCache.set(key, { ...token, until: usableUntil(token.expiresAt) });
          return token;
        })
        .finally(() => this.narrowing.delete(key));
      this.narrowing.set(key, pending);
    }
    const token = await pending;
    return {
      accessToken: token.accessToken,
      expiresAt: token.expiresAt,
      scopes: token.scopes,
      cached: false,
    };
  }

  private async runNarrow(
    tenantId: string,
    connectionId: string,
    scopes: string[],
  ): Promise<FreshToken & { stored: Buffer }> {
    let superseded = 0;
    for (let waited = 0; ; waited += WAIT_STEP_MS) {
      const leased = await this.lease(tenantId, connectionId);
      if (leased) {
        try {
          return await this.narrowLeased(leased, scopes);
        } catch (err) {
          if (!(err instanceof RefreshSuperseded)) throw err;
          if (++superseded >= MAX_SUPERSEDED) {
            throw new CommonException(
              'temporarily_unavailable',
              'The connection keeps changing; retry shortly',
            );
          }
          continue;
        } finally {
          await this.release(leased.id).catch(() => undefined);
        }
      }
      // Someone else is refreshing (or narrowing) this connection: its refresh token may be about to change.
      if (waited > (this.leaseSeconds + 5) * 1000) {
        throw new CommonException('temporarily_unavailable', 'A refresh of this connection is stuck');
      }
      await new Promise((r) => setTimeout(r, WAIT_STEP_MS));
    }
  }

  /** The narrowed token, and the fingerprint of the stored token's ciphertext as it is after the mint. */
  private async narrowLeased(row: LeasedRow, scopes: string[]): Promise<FreshToken & { stored: Buffer }> {
    if (row.status !== 'active' || !row.secret) {
      throw new CommonException('conflict', 'The connection is not active');
    }
    const { definition, app, refreshToken, sealing } = await this.grantInputs(row);
    let next: Awaited<ReturnType<ProviderOAuthClient['refresh']>>;
    try {
      this.providerCalls++;
      const timeoutMs = Math.min(10_000, (this.leaseSeconds - 3) * 1000);
      next = await this.oauth.refresh(definition, app, refreshToken, timeoutMs, scopes);
    } catch (err) {
      const error = (err as { error?: string }).error;
      if (error === 'invalid_grant') {
        if (!(await this.needsReauth(row, 'refresh token rejected'))) throw new RefreshSuperseded(row.id);
        this.metrics.refreshes.inc({ outcome: 'needs_reauth' });
        throw new CommonException('conflict', 'The connection needs re-authorization');
      }
      this.log.warn(
        { connectionId: row.id, provider: row.provider, code: error ?? (err as { code?: string }).code },
        'scope narrowing failed',
      );
      if (error === 'invalid_scope') {
        throw new NarrowingRefused();
      }
      throw new CommonException('temporarily_unavailable', 'The provider could not mint a narrowed token');
    }
    let stored = createHash('sha256').update(row.secret).digest();
    if (next.refreshToken && next.refreshToken !== refreshToken) {
      // A new refresh token (rotation): stored before anything else, with the stored access token re-sealed
      // as it is (the connection's own token, expiry and scopes do not change).
      const accessToken = await this.dataKeys.open(row.tenant_id, field(row.id, 'access_token'), row.secret);
      const seal = (name: 'access_token' | 'refresh_token', value: string) =>
        sealField(
          sealing.key,
          { tenantId: row.tenant_id, dataKeyId: sealing.dataKeyId, ...field(row.id, name) },
          Buffer.from(value, 'utf8'),
        );
      const secret = seal('access_token', accessToken);
      const written = await this.rows.commitRefresh(
        row.id,
        row.version,
        {
          secret,
          refreshToken: seal('refresh_token', next.refreshToken),
          expiresAt: row.expires_at,
          scopes: row.scopes,
          dataKeyId: readEnvelopeHeader(secret).dataKeyId,
          dueAt: row.refresh_due_at,
        },
        {
          tenantId: row.tenant_id,
          action: 'connection.refreshed',
          outcome: 'allowed',
          actor: systemActor,
          subjectUserId: row.user_id,
          connectionId: row.id,
          provider: row.provider,
          details: { rotated: true, narrowedTo: scopes },
        },
      );
      if (!written) throw new RefreshSuperseded(row.id);
      // The stored token itself did not change, only its sealing: this process's narrowed tokens stay usable.
      const before = stored;
      stored = createHash('sha256').update(secret).digest();
      for (const [key, entry] of this.narrowedCache.entries()) {
        if (key.startsWith(`${row.id} `) && entry.stored.equals(before)) entry.stored = stored;
      }
    }
    // Never wider than asked: a provider that ignores `scope` (or adds to it) gets nothing handed out.
    const granted = next.scopes ?? scopes;
    if (granted.some((s) => !scopes.includes(s))) {
      this.log.warn(
        { connectionId: row.id, provider: row.provider },
        'the provider widened a narrowed token',
      );
      throw new CommonException('temporarily_unavailable', 'The provider did not narrow the token’s scopes');
    }
    return { accessToken: next.accessToken, expiresAt: next.expiresAt, scopes: granted, stored };
  }

  /**
   * A background refresh of one connection, if it is (still) due. Never waits for another holder of the
   * lease: that holder does the work. Failures are recorded on the row (backoff, needs_reauth), not thrown.
   */
  async refreshDue(
    tenantId: string,
    connectionId: string,
  ): Promise<'refreshed' | 'not_due' | 'busy' | 'failed'> {
    const pending = this.inflight.get(connectionId);
    if (pending)
      return pending.then(
        () => 'refreshed' as const,
        () => 'failed' as const,
      );
    const leased = await this.lease(tenantId, connectionId);
    if (!leased) return 'busy';
    if (!isDue(leased)) {
      await this.release(leased.id);
      return 'not_due';
    }
    const run = this.refreshLeased(leased, 'background');
    this.inflight.set(connectionId, run);
    try {
      await run;
      return 'refreshed';
    } catch (err) {
      // Written meanwhile: the new credential has its own schedule.
      if (err instanceof RefreshSuperseded) return 'not_due';
      if (!(err instanceof CustosException)) throw err;
      return 'failed';
    } finally {
      this.inflight.delete(connectionId);
    }
  }

  /**
   * Connections whose refresh (or retry) falls due within `horizonMs`, soonest first: what the sweeper
   * queues. Leased rows are included (the lease may be abandoned); the job finds out.
   */
  async dueWithin(horizonMs: number, limit = 10_000, unleasedOnly = false): Promise<DueRefresh[]> {
    const rows = await this.rows.dueForRefresh(horizonMs / 1000, limit, unleasedOnly);
    return rows.map((r) => ({
      connectionId: r.id,
      tenantId: r.tenant_id,
      provider: r.provider,
      version: r.version,
      failures: r.refresh_failures,
      dueAt: r.due,
    }));
  }

  /**
   * The in-process sweep (no Redis): refreshes every due connection now, concurrently, within this
   * process's limits in all and per provider.
   */
  async sweep(batch = 1000): Promise<number> {
    let refreshed = 0;
    // Batch after batch while full ones keep coming (a burst of due tokens), at most 50 per sweep.
    for (let round = 0; round < 50; round++) {
      const due = (await this.dueWithin(0, batch, true)).filter((d) => d.dueAt.getTime() <= Date.now());
      const outcomes = await Promise.all(
        due.map(async (d) => {
          await this.limiter.acquire(d.provider);
          try {
            return await this.refreshDue(d.tenantId, d.connectionId);
          } catch (err) {
            this.log.warn(
              { connectionId: d.connectionId, err: { name: (err as Error).name } },
              'background refresh failed',
            );
            return 'failed' as const;
          } finally {
            this.limiter.release(d.provider);
          }
        }),
      );
      const done = outcomes.filter((o) => o === 'refreshed').length;
      refreshed += done;
      if (due.length < batch || done === 0) break;
    }
    return refreshed;
  }

  private async run(tenantId: string, connectionId: string): Promise<FreshToken> {
    let superseded = 0;
    for (let waited = 0; ; waited += WAIT_STEP_MS) {
      const leased = await this.lease(tenantId, connectionId);
      if (leased) {
        try {
          return await this.refreshLeased(leased, 'read');
        } catch (err) {
          if (!(err instanceof RefreshSuperseded)) throw err;
          // Written meanwhile: read the row again (the new credential is served, or refreshed if due).
          if (++superseded >= MAX_SUPERSEDED) {
            throw new CommonException(
              'temporarily_unavailable',
              'The connection keeps changing; retry shortly',
            );
          }
          continue;
        }
      }
      // Another process holds the lease: wait for its result.
      const current = await this.current(tenantId, connectionId);
      if (current) return current;
      if (waited > (this.leaseSeconds + 5) * 1000) {
        throw new CommonException('temporarily_unavailable', 'A refresh of this connection is stuck');
      }
      await new Promise((r) => setTimeout(r, WAIT_STEP_MS));
    }
  }

  /** Takes the lease and re-reads the row in one statement; null when someone else holds it. */
  private lease(tenantId: string, connectionId: string): Promise<LeasedRow | null> {
    return this.rows.takeRefreshLease(tenantId, connectionId, this.leaseSeconds, this.owner);
  }

  /** The stored token when it is fresh and nobody is refreshing it. */
  private async current(tenantId: string, connectionId: string): Promise<FreshToken | null> {
    const r = await this.rows.storedToken(tenantId, connectionId);
    if (!r) throw new CommonException('not_found', 'Connection not found');
    if (r.status === 'needs_reauth')
      throw new CommonException('conflict', 'The connection needs re-authorization');
    if (r.leased || !r.secret || refreshDueOnRead(r.expires_at, r.refresh_due_at)) return null;
    return {
      accessToken: await this.dataKeys.open(tenantId, field(connectionId, 'access_token'), r.secret),
      expiresAt: r.expires_at,
      scopes: r.scopes,
    };
  }

  private release(connectionId: string): Promise<unknown> {
    return this.rows.releaseRefreshLease(connectionId, this.owner);
  }

  private async refreshLeased(row: LeasedRow, trigger: 'background' | 'read'): Promise<FreshToken> {
    const release = () => this.release(row.id);
    try {
      if (row.status !== 'active' || !row.secret) {
        throw new CommonException('conflict', 'The connection is not active');
      }
      // Neither due nor close to expiry: someone refreshed while we waited for the lease.
      if (!isDue(row)) {
        await release();
        return {
          accessToken: await this.dataKeys.open(row.tenant_id, field(row.id, 'access_token'), row.secret),
          expiresAt: row.expires_at,
          scopes: row.scopes,
        };
      }
      const { definition, app, refreshToken, sealing } = await this.grantInputs(row);
      let next: Awaited<ReturnType<ProviderOAuthClient['refresh']>>;
      if (row.refresh_due_at) {
        const due = Math.max(row.refresh_due_at.getTime(), row.refresh_retry_at?.getTime() ?? 0);
        this.lag.observe({ trigger }, Math.max(0, Date.now() - due) / 1000);
      }
      try {
        this.providerCalls++;
        // The call ends well inside the lease, so that nobody takes the lease over while an answer is coming.
        const timeoutMs = Math.min(10_000, (this.leaseSeconds - 3) * 1000);
        next = await this.oauth.refresh(definition, app, refreshToken, timeoutMs);
      } catch (err) {
        if ((err as { error?: string }).error === 'invalid_grant') {
          // Only the refresh token read is refused: a credential written since (a new connect) is not touched.
          if (
            !(await this.needsReauth(row, row.interrupted ? 'refresh interrupted' : 'refresh token rejected'))
          ) {
            this.metrics.refreshes.inc({ outcome: 'superseded' });
            throw new RefreshSuperseded(row.id);
          }
          this.metrics.refreshes.inc({ outcome: 'needs_reauth' });
          throw new CommonException('conflict', 'The connection needs re-authorization');
        }
        const reason =
          (err as { error?: string; code?: string }).error ??
          (err as { code?: string }).code ??
          'unreachable';
        // Back off before the next attempt (or as long as the provider asked), so an outage is not hammered.
        const delay = retryDelayMs(row.refresh_failures + 1, retryAfterOf(err));
        await this.rows.recordRefreshFailure(row.id, delay / 1000);
        this.metrics.refreshes.inc({ outcome: 'failed' });
        this.jobs.schedule([
          {
            connectionId: row.id,
            tenantId: row.tenant_id,
            provider: row.provider,
            version: row.version,
            failures: row.refresh_failures + 1,
            dueAt: new Date(Date.now() + delay),
          },
        ]);
        throw new CommonException('temporarily_unavailable', 'The provider could not refresh the token', {
          reason,
        });
      }
      await failpoint(this.config.failpoints, this.log, 'refresh.after-provider', { connectionId: row.id });
      // Commit the new token set first; nothing else happens before it is durable.
      const seal = (name: 'access_token' | 'refresh_token', value: string) =>
        sealField(
          sealing.key,
          { tenantId: row.tenant_id, dataKeyId: sealing.dataKeyId, ...field(row.id, name) },
          Buffer.from(value, 'utf8'),
        );
      const secret = seal('access_token', next.accessToken);
      const refresh = next.refreshToken ? seal('refresh_token', next.refreshToken) : null;
      const scopes = next.scopes ?? row.scopes;
      const dueAt = refreshDueAt(new Date(), next.expiresAt);
      // One statement writes the token set (if the row is still at the version read) and its audit event.
      const written = await this.rows.commitRefresh(
        row.id,
        row.version,
        {
          secret,
          refreshToken: refresh,
          expiresAt: next.expiresAt,
          scopes,
          dataKeyId: readEnvelopeHeader(secret).dataKeyId,
          dueAt,
        },
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
      );
      if (!written) {
        // The provider's answer is dropped: it was never stored, so it is never handed out.
        this.metrics.refreshes.inc({ outcome: 'superseded' });
        throw new RefreshSuperseded(row.id);
      }
      this.metrics.refreshes.inc({ outcome: 'refreshed' });
      if (dueAt) {
        this.jobs.schedule([
          {
            connectionId: row.id,
            tenantId: row.tenant_id,
            provider: row.provider,
            version: row.version + 1,
            failures: 0,
            dueAt,
          },
        ]);
      }
      return { accessToken: next.accessToken, expiresAt: next.expiresAt, scopes };
    } catch (err) {
      await release().catch(() => undefined);
      if (err instanceof RefreshSuperseded) {
        this.log.info(
          { connectionId: row.id, provider: row.provider },
          'token refresh superseded by a write',
        );
        throw err;
      }
      if (!(err instanceof CustosException)) throw err;
      this.log.warn({ connectionId: row.id, provider: row.provider, code: err.code }, 'token refresh failed');
      throw err;
    }
  }

  /**
   * What a refresh_token grant for the leased row needs: the provider's definition, the tenant's app, the refresh
   * token and the sealing key. Refused while refresh is backing off after a failure (or as the provider asked):
   * no provider call before the retry time. The sealing key is fetched before the provider call, so that nothing
   * slow (a key backend call) stands between the provider's answer and the commit.
   */
  private async grantInputs(row: LeasedRow) {
    if (!row.refresh_token) throw new CommonException('conflict', 'The connection has no refresh token');
    if (row.refresh_retry_at && row.refresh_retry_at.getTime() > Date.now()) {
      throw new CommonException(
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
      throw new CommonException('temporarily_unavailable', 'No OAuth app is configured for this provider');
    }
    const refreshToken = await this.dataKeys.open(
      row.tenant_id,
      field(row.id, 'refresh_token'),
      row.refresh_token,
    );
    const sealing = await this.dataKeys.sealingKey(row.tenant_id);
    return { definition, app, refreshToken, sealing };
  }

  /** Marks the row `needs_reauth` if it is still at the version read; false when it was written meanwhile. */
  private async needsReauth(row: LeasedRow, reason: string): Promise<boolean> {
    const marked = await this.db.transaction(async (m) => {
      if (!(await this.rows.markNeedsReauth(m, row.id, row.version))) return false;
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
      return true;
    });
    if (!marked) return false;
    this.webhooks.notify(row.tenant_id, 'connection.needs_reauth', {
      connectionId: row.id,
      userId: row.user_id,
      provider: row.provider,
      reason,
    });
    return true;
  }
}

/** Until when a narrowed token is handed out: a margin before expiry of a tenth of its life, at most a minute. */
function usableUntil(expiresAt: Date | null): number {
  if (!expiresAt) return Number.POSITIVE_INFINITY;
  return expiresAt.getTime() - Math.min(60_000, Math.max(0, expiresAt.getTime() - Date.now()) / 10);
}

/** A row worth a provider call: its refresh has come due (or its token is about to expire). */
function isDue(row: Pick<LeasedRow, 'expires_at' | 'refresh_due_at'>): boolean {
  return refreshDueOnRead(row.expires_at, row.refresh_due_at);
}

/** The provider's Retry-After, from openid-client's error shapes (4xx: err.response; 5xx: err.cause). */
function retryAfterOf(err: unknown): number | null {
  const e = err as { response?: { headers?: Headers }; cause?: unknown };
  const headers = e.response?.headers ?? (e.cause instanceof Response ? e.cause.headers : undefined);
  return parseRetryAfter(headers?.get('retry-after'));
}
