/**
 * Connect sessions' side of a custom provider's delete: its open connect links stop working. Registered with
 * TenantProvidersService at start-up because providers/ sits below connect/ (see providers/provider-usage.ts);
 * the statement runs in the delete's own transaction, through the manager it passes.
 */
import { Inject, Injectable, type OnModuleInit } from '@nestjs/common';
import type { EntityManager } from 'typeorm';
import type { ProviderUsage } from '../providers/provider-usage.js';
import { TenantProvidersService } from '../providers/tenant-providers.service.js';
import { ConnectSessionsRepository } from './connect-sessions.repository.js';

@Injectable()
export class SessionProviderUsage implements ProviderUsage, OnModuleInit {
  constructor(
    @Inject(TenantProvidersService) private readonly tenantProviders: TenantProvidersService,
    @Inject(ConnectSessionsRepository) private readonly sessions: ConnectSessionsRepository,
  ) {}

  onModuleInit(): void {
    this.tenantProviders.registerUsage(this);
  }

  async forget(m: EntityManager, tenantId: string, provider: string): Promise<Record<string, number>> {
    return { sessionsClosed: await this.sessions.failPendingForProvider(m, tenantId, provider) };
  }
}
