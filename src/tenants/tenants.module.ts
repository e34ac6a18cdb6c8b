import { Module } from '@nestjs/common';
import { AuditModule } from '../audit/audit.module.js';
import { CryptoModule } from '../crypto/crypto.module.js';
import { TenantsService } from './tenants.service.js';
import { WebhooksService } from './webhooks.service.js';

/** Tenants, their settings and their signed webhooks. */
@Module({
  imports: [AuditModule, CryptoModule],
  providers: [TenantsService, WebhooksService],
  exports: [TenantsService, WebhooksService],
})
export class TenantsModule {}
