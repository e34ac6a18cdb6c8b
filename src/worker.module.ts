import { Module } from '@nestjs/common';
import { AuditModule } from './audit/audit.module.js';
import { ConnectModule } from './connect/connect.module.js';
import { ConnectionsModule } from './connections/connections.module.js';
import { CryptoModule } from './crypto/crypto.module.js';
import { IdentityModule } from './identity/identity.module.js';
import { TenantsModule } from './tenants/tenants.module.js';
import { WorkerJobs } from './worker-jobs.js';

/**
 * The worker role: background jobs (refresh ahead, expiry, revocation at providers, key migrations, pruning,
 * audit partitions and retention, deleted tenants' shredding).
 */
@Module({
  imports: [AuditModule, ConnectModule, ConnectionsModule, CryptoModule, IdentityModule, TenantsModule],
  providers: [WorkerJobs],
  exports: [WorkerJobs],
})
export class WorkerModule {}
