/**
 * Revokes disconnected users' tokens at the provider (RFC 7009), refresh token first, with the tenant's own
 * app. The local secret is already gone when this runs; a provider outage only delays this. Failures retry
 * with exponential backoff (30 s doubling, capped at an hour) up to MAX_ATTEMPTS, then the token is erased
 * and the give-up is audited. A row is claimed with SKIP LOCKED, so replicas never revoke twice at once.
 *
 * Also connections' side of a tenant's deletion (registered with TenantDeletionService at start-up, since
 * tenants/ sits below connections/): the request revokes every live connection of the tenant and queues its
 * tokens here; shredding waits until this queue has none of the tenant's left, then drops whatever remains.
 */
import { Inject, Injectable, type OnModuleInit } from '@nestjs/common';
import type { Logger } from 'pino';
import { DataSource, type EntityManager } from 'typeorm';
import { AuditService } from '../audit/audit.service.js';
import { LOGGER } from '../common/logger.js';
import { DataKeyService } from '../crypto/data-key.service.js';
import { ProviderAppsService } from '../providers/provider-apps.service.js';
import { ProviderRegistry } from '../providers/provider-registry.js';
import { ProviderOAuthClient } from '../providers/oauth-client.js';
import { TenantDeletionService } from '../tenants/tenant-deletion.service.js';
import { PendingRevocationsRepository, type PendingRevocationRow } from './pending-revocations.repository.js';

const MAX_ATTEMPTS = 10;

@Injectable()
export class ProviderRevocationService implements OnModuleInit {
  constructor(
    @Inject(DataSource) private readonly db: DataSource,
    @Inject(PendingRevocationsRepository) private readonly pending: PendingRevocationsRepository,
    @Inject(AuditService) private readonly audit: AuditService,
    @Inject(DataKeyService) private readonly dataKeys: DataKeyService,
    @Inject(ProviderAppsService) private readonly apps: ProviderAppsService,
    @Inject(ProviderRegistry) private readonly providers: ProviderRegistry,
    @Inject(ProviderOAuthClient) private readonly oauth: ProviderOAuthClient,
    @Inject(LOGGER) private readonly log: Logger,
    @Inject(TenantDeletionService) private readonly deletions: TenantDeletionService,
  ) {}

  onModuleInit(): void {
    this.deletions.registerParticipant({
      name: 'connections',
      requested: (m, tenantId) => this.revokeTenant(m, tenantId),
      outstanding: (tenantId) => this.pending.countForTenant(this.db.manager, tenantId),
      shredding: async (m, tenantId) => ({
        connectionsDestroyed: await this.pending.connectionsOfTenant(m, tenantId),
        revocationsAbandoned: await this.pending.deleteForTenant(m, tenantId),
      }),
    });
  }

  /**
   * A tenant being deleted, in the request's transaction: every live connection is revoked (its secrets
   * destroyed, a tombstone kept until shredding) and the tokens of those whose provider has an RFC 7009
   * endpoint are queued here, refresh token first, as when one connection is revoked.
   */
  async revokeTenant(m: EntityManager, tenantId: string): Promise<Record<string, number>> {
    const revocable: string[] = [];
    for (const provider of await this.pending.liveOauthProvidersOfTenant(m, tenantId)) {
      const definition = await this.providers.get(tenantId, provider, { fresh: true, manager: m });
      if (definition?.oauth2?.revocationUrl) revocable.push(provider);
    }
    const { connections, queued } = await this.pending.revokeAllOfTenant(m, tenantId, revocable);
    return { connectionsRevoked: connections, revocationsQueued: queued };
  }

  /** Processes due revocations (of one connection, or all); returns how many tokens were revoked. */
  async processDue(connectionId?: string, limit = 100): Promise<number> {
    let revoked = 0;
    for (let i = 0; i < limit; i++) {
      const done = await this.db.transaction(async (m) => {
        // The earliest token of a connection first: its refresh token before its access token.
        const row = await this.pending.claimDue(m, connectionId ?? null);
        if (!row) return null;
        const outcome = await this.revokeOne(row);
        if (outcome === 'revoked') {
          await this.pending.delete(m, row.id);
        } else {
          const delay = Math.min(3600, 30 * 2 ** row.attempts);
          await this.pending.recordFailure(m, row.id, outcome.error, delay);
        }
        if (outcome !== 'revoked' && row.attempts + 1 < MAX_ATTEMPTS) return 'retry';
        await this.audit.record(
          {
            tenantId: row.tenant_id,
            action:
              outcome === 'revoked'
                ? 'connection.revoked_at_provider'
                : 'connection.provider_revocation_failed',
            outcome: outcome === 'revoked' ? 'allowed' : 'failed',
            actor: { type: 'system', id: null },
            connectionId: row.connection_id,
            provider: row.provider,
            details: {
              tokenType: row.token_type,
              attempts: row.attempts + 1,
              ...(outcome !== 'revoked' ? { error: outcome.error } : {}),
            },
          },
          m,
        );
        if (outcome !== 'revoked') {
          // Out of attempts: erase the token, the give-up is on record.
          await this.pending.delete(m, row.id);
        }
        return outcome === 'revoked' ? 'revoked' : 'retry';
      });
      if (done === null) break;
      if (done === 'revoked') revoked++;
      else if (connectionId) break;
    }
    return revoked;
  }

  private async revokeOne(row: PendingRevocationRow): Promise<'revoked' | { error: string }> {
    try {
      const definition = await this.providers.get(row.tenant_id, row.provider);
      const app = await this.apps.open(row.tenant_id, row.provider);
      if (!definition?.oauth2?.revocationUrl || !app) return { error: 'provider_or_app_missing' };
      const token = await this.dataKeys.open(
        row.tenant_id,
        { scope: 'connection', recordId: row.connection_id, field: row.token_type },
        row.token,
      );
      await this.oauth.revoke(definition, app, token, row.token_type);
      return 'revoked';
    } catch (err) {
      const e = err as { name?: string; code?: string; error?: string };
      const error = (e.error ?? e.code ?? e.name ?? 'error').slice(0, 64);
      this.log.warn({ provider: row.provider, error }, 'revocation at the provider failed; will retry');
      return { error };
    }
  }
}
