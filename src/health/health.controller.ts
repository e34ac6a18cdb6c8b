import { Controller, Get, Inject, Res } from '@nestjs/common';
import { ApiTags } from '@nestjs/swagger';
import type { FastifyReply } from 'fastify';
import { DataSource } from 'typeorm';
import { KeyBackends } from '../crypto/key-backends.js';
import { JOB_RUNNER, type JobRunner } from '../jobs/job-runner.js';

const withTimeout = <T>(p: Promise<T>, ms: number) =>
  Promise.race([p, new Promise<never>((_, rej) => setTimeout(() => rej(new Error('timeout')), ms).unref())]);

@ApiTags('health')
@Controller()
export class HealthController {
  constructor(
    @Inject(DataSource) private readonly db: DataSource,
    @Inject(KeyBackends) private readonly backends: KeyBackends,
    @Inject(JOB_RUNNER) private readonly jobs: JobRunner,
  ) {}

  /** Liveness: the process answers. */
  @Get('healthz')
  healthz() {
    return { status: 'ok' };
  }

  /** Readiness: the database, the key backend and (when configured) Redis answer. */
  @Get('readyz')
  async readyz(@Res({ passthrough: true }) reply: FastifyReply) {
    const probe = async (fn: () => Promise<unknown>) => {
      try {
        await withTimeout(fn(), 2000);
        return 'ok';
      } catch {
        return 'unavailable';
      }
    };
    const checks = {
      database: await probe(() => this.db.query('SELECT 1')),
      keyBackend: await probe(() => this.backends.platformBackend().check()),
      jobs: await probe(() => this.jobs.check()),
    };
    const ready = Object.values(checks).every((v) => v === 'ok');
    void reply.status(ready ? 200 : 503);
    return { status: ready ? 'ready' : 'unavailable', checks };
  }
}
