import { Module } from '@nestjs/common';
import { BrokerModule } from './broker/broker.module.js';
import { ConnectModule } from './connect/connect.module.js';
import { ConnectionsModule } from './connections/connections.module.js';
import { CryptoModule } from './crypto/crypto.module.js';
import { WorkerJobs } from './worker-jobs.js';

/** The worker role: background jobs (refresh ahead, expiry, revocation at providers, key migrations, pruning). */
@Module({
  imports: [BrokerModule, ConnectModule, ConnectionsModule, CryptoModule],
  providers: [WorkerJobs],
  exports: [WorkerJobs],
})
export class WorkerModule {}
