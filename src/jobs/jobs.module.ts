import { Module } from '@nestjs/common';
import type { Logger } from 'pino';
import { LOGGER } from '../common/logger.js';
import { Metrics } from '../common/metrics.js';
import { CONFIG, type Config } from '../config/config.js';
import { BullMqJobRunner, InProcessJobRunner, JOB_RUNNER, type JobRunner } from './job-runner.js';
import { RefreshJobs } from './refresh-jobs.js';
import { RefreshQueue } from './refresh-queue.js';

/** The BullMQ refresh-ahead queue, or null without Redis (the in-process sweep reads PostgreSQL instead). */
export const REFRESH_QUEUE = Symbol('REFRESH_QUEUE');

/**
 * Background work, behind two ports chosen here at start-up from the configuration: the job runner (BullMQ
 * with Redis in a role that runs jobs, in-process otherwise) and refresh scheduling (the BullMQ refresh queue
 * with Redis, nothing queued without it). Nothing is started here; src/background.ts starts what the role runs.
 */
@Module({
  providers: [
    {
      provide: JOB_RUNNER,
      inject: [CONFIG, LOGGER],
      useFactory: (config: Config, logger: Logger): JobRunner =>
        // The api role runs no background jobs: its runner stays empty.
        config.redisUrl && config.role !== 'api'
          ? new BullMqJobRunner(config.redisUrl, logger, 'maintenance', config.queuePrefix)
          : new InProcessJobRunner(logger),
    },
    {
      provide: REFRESH_QUEUE,
      inject: [CONFIG, LOGGER, Metrics],
      useFactory: (config: Config, logger: Logger, metrics: Metrics): RefreshQueue | null =>
        config.redisUrl
          ? new RefreshQueue({
              redisUrl: config.redisUrl,
              prefix: config.queuePrefix,
              log: logger,
              concurrency: config.refreshConcurrency,
              lockMs: config.refreshLeaseSeconds * 1000,
              metrics: metrics.registry,
            })
          : null,
    },
    RefreshJobs,
  ],
  exports: [JOB_RUNNER, REFRESH_QUEUE, RefreshJobs],
})
export class JobsModule {}
