/**
 * Identity's side of a tenant's deletion: its admin keys and connectors stop authenticating at once. The lookups
 * that authenticate them already refuse a tenant being deleted (admin-keys.repository.ts, connectors.repository.ts);
 * what is left is the token endpoint's cache of connector registrations, which the request outdates by moving
 * each connector's version. Registered with TenantDeletionService at start-up because tenants/ sits below
 * identity/ (see tenants/tenant-deletion-participant.ts); the statement runs in the request's own transaction.
 */
import { Inject, Injectable, type OnModuleInit } from '@nestjs/common';
import type { EntityManager } from 'typeorm';
import type { TenantDeletionParticipant } from '../tenants/tenant-deletion-participant.js';
import { TenantDeletionService } from '../tenants/tenant-deletion.service.js';
import { ConnectorsRepository } from './connectors.repository.js';

@Injectable()
export class TenantDeletionCredentials implements TenantDeletionParticipant, OnModuleInit {
  readonly name = 'identity';

  constructor(
    @Inject(TenantDeletionService) private readonly deletions: TenantDeletionService,
    @Inject(ConnectorsRepository) private readonly connectors: ConnectorsRepository,
  ) {}

  onModuleInit(): void {
    this.deletions.registerParticipant(this);
  }

  async requested(m: EntityManager, tenantId: string): Promise<Record<string, number>> {
    return { connectorsRefused: await this.connectors.supersedeAllOfTenant(m, tenantId) };
  }
}
