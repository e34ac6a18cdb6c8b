import { Module } from '@nestjs/common';
import { AuditModule } from '../audit/audit.module.js';
import { BrokerModule } from '../broker/broker.module.js';
import { CryptoModule } from '../crypto/crypto.module.js';
import { JobsModule } from '../jobs/jobs.module.js';
import { HealthController } from './health.controller.js';
import { MetricsController } from './metrics.controller.js';

/** /healthz, /readyz and /metrics: served by every role. */
@Module({
  imports: [AuditModule, BrokerModule, CryptoModule, JobsModule],
  controllers: [HealthController, MetricsController],
})
export class HealthModule {}
