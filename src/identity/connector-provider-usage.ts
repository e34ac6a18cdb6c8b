/**
 * Connectors' side of a custom provider's delete: the provider leaves every connector's allowed providers and
 * scopes, so that a provider created later under the same key inherits no permission. Registered with
 * TenantProvidersService at start-up because providers/ sits below identity/ (see providers/provider-usage.ts);
 * the statement runs in the delete's own transaction, through the manager it passes.
 */
import { Inject, Injectable, type OnModuleInit } from '@nestjs/common';
import type { EntityManager } from 'typeorm';
import type { ProviderUsage } from '../providers/provider-usage.js';
import { TenantProvidersService } from '../providers/tenant-providers.service.js';
import { ConnectorsRepository } from './connectors.repository.js';

@Injectable()
export class ConnectorProviderUsage implements ProviderUsage, OnModuleInit {
  constructor(
    @Inject(TenantProvidersService) private readonly tenantProviders: TenantProvidersService,
    @Inject(ConnectorsRepository) private readonly connectors: ConnectorsRepository,
  ) {}

  onModuleInit(): void {
    this.tenantProviders.registerUsage(this);
  }

  async forget(m: EntityManager, tenantId: string, provider: string): Promise<Record<string, number>> {
    return { connectorsUpdated: await this.connectors.removeProvider(m, tenantId, provider) };
  }
}
