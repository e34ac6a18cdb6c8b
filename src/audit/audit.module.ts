import { Module } from '@nestjs/common';
import { AuditBatcher } from './audit-batcher.js';
import { AuditService } from './audit.service.js';
import { DenialThrottle } from './denial-throttle.js';

/** The audit trail: the only writer of audit_events, its group commit, and the denial throttle. */
@Module({
  providers: [AuditService, AuditBatcher, DenialThrottle],
  exports: [AuditService, AuditBatcher, DenialThrottle],
})
export class AuditModule {}
