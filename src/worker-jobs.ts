/** The worker role's periodic jobs, registered on the job runner the role was given. */
import { Inject, Injectable } from '@nestjs/common';
import type { Logger } from 'pino';
import { AuditRetention } from './audit/audit-retention.js';
import { LOGGER } from './common/logger.js';
import { CONFIG, type Config } from './config/config.js';
import { ConnectSessionsService } from './connect/connect-sessions.service.js';
import { ConnectionsService } from './connections/connections.service.js';
import { ProviderRevocationService } from './connections/provider-revocation.service.js';
import { TokenRefresher } from './connections/token-refresher.service.js';
import { KeyBackendService } from './crypto/key-backend.service.js';
import { UsedAssertionsRepository } from './identity/used-assertions.repository.js';
import type { JobRunner } from './jobs/job-runner.js';
import type { RefreshQueue } from './jobs/refresh-queue.js';
import { TenantDeletionService } from './tenants/tenant-deletion.service.js';

@Injectable()
export class WorkerJobs {
  constructor(
    @Inject(CONFIG) private readonly config: Config,
    @Inject(LOGGER) private readonly logger: Logger,
    @Inject(ConnectionsService) private readonly connections: ConnectionsService,
    @Inject(KeyBackendService) private readonly keyBackends: KeyBackendService,
    @Inject(TokenRefresher) private readonly refresher: TokenRefresher,
    @Inject(ProviderRevocationService) private readonly revocations: ProviderRevocationService,
    @Inject(UsedAssertionsRepository) private readonly usedAssertions: UsedAssertionsRepository,
    @Inject(ConnectSessionsService) private readonly sessions: ConnectSessionsService,
    @Inject(AuditRetention) private readonly auditRetention: AuditRetention,
    @Inject(TenantDeletionService) private readonly deletions: TenantDeletionService,
  ) {}

  register(jobs: JobRunner, refreshQueue: RefreshQueue | null): void {
    const { logger, connections, keyBackends, refresher, revocations, usedAssertions, sessions } = this;
    jobs.register('connections.mark-expired', 60_000, async () => {
      const n = await connections.markExpired();
      if (n > 0) logger.info({ count: n }, 'connections marked expired');
    });
    // The backstop for data-key migrations: resumes any that a crash or an outage interrupted.
    jobs.register('key-backends.migrate', 30_000, async () => {
      for (const tenantId of await keyBackends.tenantsMigrating()) {
        const { migrated, remaining } = await keyBackends.migrate(tenantId);
        logger.info({ tenantId, migrated, remaining }, 'data keys migrated to the tenant’s key backend');
      }
    });
    const sweepMs = this.config.refreshSweepSeconds * 1000;
    if (refreshQueue) {
      // Refresh ahead with Redis: every worker re-creates, from PostgreSQL, any job due soon that is missing.
      refreshQueue.startSweeper(() => refresher.dueWithin(Math.max(60_000, 3 * sweepMs)), sweepMs);
    } else {
      // Without Redis: the worker refreshes due tokens itself.
      jobs.register('connections.refresh-due', sweepMs, async () => {
        const n = await refresher.sweep();
        if (n > 0) logger.info({ count: n }, 'tokens refreshed ahead of expiry');
      });
    }
    jobs.register('connections.revoke-at-provider', 60_000, async () => {
      const n = await revocations.processDue();
      if (n > 0) logger.info({ count: n }, 'tokens revoked at providers');
    });
    // Named before the table moved to identity/: the name is the BullMQ schedule's key in Redis.
    jobs.register('broker.prune-used-assertions', 10 * 60_000, async () => {
      await usedAssertions.pruneExpired();
    });
    jobs.register('connect.prune-expired-sessions', 10 * 60_000, async () => {
      const n = await sessions.pruneExpired();
      if (n > 0) logger.info({ count: n }, 'expired connect sessions deleted');
    });
    // The audit trail's coming months' partitions, and CUSTOS_AUDIT_RETENTION_MONTHS.
    const retention = this.auditRetention;
    jobs.register('audit.partitions-and-retention', 60 * 60_000, () => retention.maintain());
    // Deleted tenants, crypto-shredded once their tokens are revoked at the providers (or a day has passed).
    const deletions = this.deletions;
    jobs.register('tenants.shred-deleted', 60_000, async () => {
      const n = await deletions.shredDue();
      if (n > 0) logger.info({ count: n }, 'deleted tenants shredded');
    });
  }
}
