/**
 * Connections' side of a custom provider's delete (and auth-mode change): its live connections block it,
 * and its queued revocations go with it. Registered with TenantProvidersService at start-up because
 * providers/ sits below connections/ and must not import it (see providers/provider-usage.ts); the
 * statements still run in the provider delete's own transaction, through the manager it passes.
 */
import { Inject, Injectable, type OnModuleInit } from '@nestjs/common';
import type { EntityManager } from 'typeorm';
import type { ProviderUsage } from '../providers/provider-usage.js';
import { TenantProvidersService } from '../providers/tenant-providers.service.js';
import { ConnectionsRepository } from './connections.repository.js';
import { PendingRevocationsRepository } from './pending-revocations.repository.js';

@Injectable()
export class ConnectionProviderUsage implements ProviderUsage, OnModuleInit {
  constructor(
    @Inject(TenantProvidersService) private readonly tenantProviders: TenantProvidersService,
    @Inject(ConnectionsRepository) private readonly connections: ConnectionsRepository,
    @Inject(PendingRevocationsRepository) private readonly pending: PendingRevocationsRepository,
  ) {}

  onModuleInit(): void {
    this.tenantProviders.registerUsage(this);
  }

  liveConnections(m: EntityManager, tenantId: string, provider: string): Promise<number> {
    return this.connections.countLive(m, tenantId, provider);
  }

  /** Queued revocations go: their sealed tokens could only ever be sent to the deleted provider's endpoints. */
  async forget(m: EntityManager, tenantId: string, provider: string): Promise<Record<string, number>> {
    return { revocationsDropped: await this.pending.deleteForProvider(m, tenantId, provider) };
  }
}
