/**
 * Starts, once the app is initialised, what runs besides HTTP, by role: the first platform admin key, the
 * refresh-ahead queue (the api role only adds jobs; a worker runs them), the worker's periodic jobs, the audit
 * sealer and the job runner. Stops them before the rest of the app closes (bootstrap's close calls stop() first).
 */
import {
  Inject,
  Injectable,
  type OnApplicationBootstrap,
  type OnModuleDestroy,
  Optional,
} from '@nestjs/common';
import type { Logger } from 'pino';
import { AuditSealer } from './audit/audit-sealer.js';
import { LOGGER } from './common/logger.js';
import { CONFIG, type Config } from './config/config.js';
import { TokenRefresher } from './connections/token-refresher.service.js';
import { AdminKeysService } from './identity/admin-keys.service.js';
import { JOB_RUNNER, type JobRunner } from './jobs/job-runner.js';
import { REFRESH_QUEUE } from './jobs/jobs.module.js';
import { RefreshJobs } from './jobs/refresh-jobs.js';
import type { RefreshQueue } from './jobs/refresh-queue.js';
import { WorkerJobs } from './worker-jobs.js';

@Injectable()
export class Background implements OnApplicationBootstrap, OnModuleDestroy {
  private stopping?: Promise<void>;

  constructor(
    @Inject(CONFIG) private readonly config: Config,
    @Inject(LOGGER) private readonly logger: Logger,
    @Inject(AdminKeysService) private readonly adminKeys: AdminKeysService,
    @Inject(TokenRefresher) private readonly refresher: TokenRefresher,
    @Inject(RefreshJobs) private readonly refreshJobs: RefreshJobs,
    @Inject(JOB_RUNNER) private readonly jobs: JobRunner,
    @Inject(REFRESH_QUEUE) private readonly refreshQueue: RefreshQueue | null,
    @Inject(AuditSealer) private readonly sealer: AuditSealer,
    @Optional() @Inject(WorkerJobs) private readonly workerJobs: WorkerJobs | null,
  ) {}

  async onApplicationBootstrap(): Promise<void> {
    const { config, logger } = this;
    const boot = await this.adminKeys.ensureBootstrapKey(config.bootstrapAdminKey, config.dataDir);
    if (boot.generatedAt) {
      logger.warn(
        { file: boot.generatedAt },
        `the first platform admin key was written to ${boot.generatedAt}`,
      );
    }
    const worker = config.role !== 'api';
    const queue = this.refreshQueue;
    if (queue) {
      const refresher = this.refresher;
      // The api role only adds jobs (the next due time after a refresh or an import); workers run them.
      await queue.start(
        worker ? { run: (d) => refresher.refreshDue(d.t, d.c), limiter: refresher.limiter } : undefined,
      );
      this.refreshJobs.attach(queue, (err) =>
        logger.warn({ err: { name: err.name, message: err.message } }, 'could not queue a refresh'),
      );
    }
    if (worker) {
      this.workerJobs?.register(this.jobs, queue);
      // Its own timer rather than a job: it runs every second, and takes turns across processes by a lock.
      this.sealer.start();
    }
    await this.jobs.start();
  }

  /** Stops the refresh queue and the job runner; idempotent. */
  stop(): Promise<void> {
    this.stopping ??= (async () => {
      await this.sealer.stop().catch(() => undefined);
      await this.refreshQueue?.stop().catch(() => undefined);
      await this.jobs.stop().catch(() => undefined);
    })();
    return this.stopping;
  }

  onModuleDestroy(): Promise<void> {
    return this.stop();
  }
}
