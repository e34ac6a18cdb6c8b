import { Module } from '@nestjs/common';
import { TypeOrmModule } from '@nestjs/typeorm';
import { AuditModule } from '../audit/audit.module.js';
import { CryptoModule } from '../crypto/crypto.module.js';
import { TenantsRepository } from './tenants.repository.js';
import { TenantsService } from './tenants.service.js';
import { WebhooksService } from './webhooks.service.js';
import { Tenant } from './tenant.entity.js';

/** Tenants, their settings and their signed webhooks. */
@Module({
  imports: [TypeOrmModule.forFeature([Tenant]), AuditModule, CryptoModule],
  providers: [TenantsRepository, TenantsService, WebhooksService],
  exports: [TenantsRepository, TenantsService, WebhooksService],
})
export class TenantsModule {}
