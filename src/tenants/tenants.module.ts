import { Module } from '@nestjs/common';
import { TypeOrmModule } from '@nestjs/typeorm';
import { AuditModule } from '../audit/audit.module.js';
import { CryptoModule } from '../crypto/crypto.module.js';
import { TenantDeletionService } from './tenant-deletion.service.js';
import { TenantsRepository } from './tenants.repository.js';
import { TenantsService } from './tenants.service.js';
import { WebhooksService } from './webhooks.service.js';
import { Tenant } from './tenant.entity.js';

/** Tenants, their settings, their signed webhooks and their deletion (crypto-shredding). */
@Module({
  imports: [TypeOrmModule.forFeature([Tenant]), AuditModule, CryptoModule],
  providers: [TenantsRepository, TenantsService, WebhooksService, TenantDeletionService],
  exports: [TenantsRepository, TenantsService, WebhooksService, TenantDeletionService],
})
export class TenantsModule {}
