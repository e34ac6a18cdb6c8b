import { Controller, Get, Inject, Res } from '@nestjs/common';
import { ApiOperation, ApiTags } from '@nestjs/swagger';
import { ApiJsonResponse, type JsonSchema } from '../common/openapi.js';
import type { FastifyReply } from 'fastify';
import type { Logger } from 'pino';
import { DataSource } from 'typeorm';
import { AuditBatcher } from '../audit/audit-batcher.js';
import { DecisionBatcher } from '../broker/decision-batcher.js';
import { LOGGER } from '../common/logger.js';
import { CONFIG, type Config } from '../config/config.js';
import { KeyBackends } from '../crypto/key-backends.js';
import { preparedQuery } from '../database/sql.js';
import { JOB_RUNNER, type JobRunner } from '../jobs/job-runner.js';
import { REFRESH_QUEUE } from '../jobs/jobs.module.js';
import type { RefreshQueue } from '../jobs/refresh-queue.js';

/** Each probe's deadline: readiness answers quickly, whatever hangs behind it. */
const PROBE_MS = 2000;

const readinessSchema: JsonSchema = {
  type: 'object',
  required: ['status', 'checks'],
  properties: {
    status: { type: 'string', enum: ['ready', 'unavailable'] },
    checks: {
      type: 'object',
      properties: {
        database: { type: 'string', enum: ['ok', 'unavailable'] },
        keyBackend: { type: 'string', enum: ['ok', 'unavailable'] },
        jobs: { type: 'string', enum: ['ok', 'unavailable'] },
      },
    },
  },
};

const withTimeout = <T>(p: Promise<T>, ms: number) =>
  Promise.race([p, new Promise<never>((_, rej) => setTimeout(() => rej(new Error('timeout')), ms).unref())]);

@ApiTags('health')
@Controller()
export class HealthController {
  constructor(
    @Inject(DataSource) private readonly db: DataSource,
    @Inject(KeyBackends) private readonly backends: KeyBackends,
    @Inject(JOB_RUNNER) private readonly jobs: JobRunner,
    @Inject(REFRESH_QUEUE) private readonly refreshQueue: RefreshQueue | null,
    @Inject(DecisionBatcher) private readonly decisions: DecisionBatcher,
    @Inject(AuditBatcher) private readonly audit: AuditBatcher,
    @Inject(LOGGER) private readonly log: Logger,
    @Inject(CONFIG) private readonly config: Config,
  ) {}

  /** Liveness: the process answers. */
  @Get('healthz')
  @ApiOperation({
    summary: 'Liveness probe',
    description: 'The process answers. No authentication; for orchestrators (Kubernetes livenessProbe).',
  })
  @ApiJsonResponse(
    200,
    'Alive.',
    { type: 'object', required: ['status'], properties: { status: { type: 'string', enum: ['ok'] } } },
    { status: 'ok' },
  )
  healthz() {
    return { status: 'ok' };
  }

  /**
   * Readiness: the database, the key backend and (when configured) Redis answer. The database counts as ready
   * only when the token endpoint's own path works: a pool connection answers, and the decision read and the
   * audit INSERT go through their batchers' queues (a stuck batch shows here, not only a dead server). A worker
   * serves no token endpoint, so only its pool is probed. Jobs: the runner the role was given, and the refresh
   * queue when Redis is configured, which the api role uses too (it queues the next refresh after a write).
   */
  @Get('readyz')
  @ApiOperation({
    summary: 'Readiness probe',
    description:
      'No authentication. Ready when the database answers on the token endpoint’s own path (a pool ' +
      'connection, the decision read and the audit write through their batchers), the platform key backend ' +
      'wraps and unwraps, and the job runner (and, with Redis, the refresh queue) answers; each probed with a ' +
      '2 s deadline. A failing tenant key backend does not make Custos unready.',
  })
  @ApiJsonResponse(200, 'Ready.', readinessSchema, {
    status: 'ready',
    checks: { database: 'ok', keyBackend: 'ok', jobs: 'ok' },
  })
  @ApiJsonResponse(503, 'Not ready: the checks say which part failed.', readinessSchema, {
    status: 'unavailable',
    checks: { database: 'ok', keyBackend: 'ok', jobs: 'unavailable' },
  })
  async readyz(@Res({ passthrough: true }) reply: FastifyReply) {
    const failed: string[] = [];
    const probe = async (name: string, fn: () => Promise<unknown>) => {
      try {
        await withTimeout(fn(), PROBE_MS);
        return true;
      } catch {
        failed.push(name);
        return false;
      }
    };
    const state = (ok: boolean[]) => (ok.every(Boolean) ? 'ok' : 'unavailable');
    const tokenPath = this.config.role !== 'worker';
    const [pool, decisions, audit, keyBackend, jobs] = await Promise.all([
      // A statement that overruns the probe's deadline gives up its connection rather than return it to the pool.
      probe('database.pool', () =>
        preparedQuery(this.db, 'custos_ready_v1', 'SELECT 1', [], AbortSignal.timeout(PROBE_MS)),
      ),
      tokenPath ? probe('database.token-decisions', () => this.decisions.check()) : true,
      tokenPath ? probe('database.audit-writes', () => this.audit.check()) : true,
      probe('keyBackend', () => this.backends.platformBackend().check()),
      // The role's job runner and, with Redis, the refresh queue: the api role runs no jobs but queues refreshes.
      probe('jobs', () => Promise.all([this.jobs.check(), this.refreshQueue?.check()])),
    ]);
    const checks = {
      database: state([pool, decisions, audit]),
      keyBackend: state([keyBackend]),
      jobs: state([jobs]),
    };
    const ready = Object.values(checks).every((v) => v === 'ok');
    if (!ready) this.log.warn({ failed }, 'not ready');
    void reply.status(ready ? 200 : 503);
    return { status: ready ? 'ready' : 'unavailable', checks };
  }
}
