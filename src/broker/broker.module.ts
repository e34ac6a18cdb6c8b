import { Module } from '@nestjs/common';
import { AuditModule } from '../audit/audit.module.js';
import { ConnectModule } from '../connect/connect.module.js';
import { ConnectionsModule } from '../connections/connections.module.js';
import { IdentityModule } from '../identity/identity.module.js';
import { ProvidersModule } from '../providers/providers.module.js';
import { TenantsModule } from '../tenants/tenants.module.js';
import { BrokerService } from './broker.service.js';
import { DecisionBatcher } from './decision-batcher.js';

/** The token endpoint's work: RFC 8693 exchange, its batched decision read, consent_required. */
@Module({
  imports: [AuditModule, IdentityModule, ProvidersModule, ConnectionsModule, ConnectModule, TenantsModule],
  providers: [DecisionBatcher, BrokerService],
  exports: [BrokerService, DecisionBatcher],
})
export class BrokerModule {}
