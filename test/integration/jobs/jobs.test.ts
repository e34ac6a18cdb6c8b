import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { createLogger } from '../../../src/common/logger.js';
import { BullMqJobRunner, InProcessJobRunner } from '../../../src/jobs/job-runner.js';
import { testRedisUrl } from '../../support/env.js';

const waitFor = async (cond: () => boolean, ms = 10_000) => {
  const until = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > until) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 25));
  }
};

describe('job runners', () => {
  it('runs a periodic job through BullMQ on the real Redis, and re-creates its schedule when Redis loses it', async () => {
    const queue = `custos-test-${randomUUID()}`;
    const prefix = `custos-test-${randomUUID()}`;
    const runner = new BullMqJobRunner(testRedisUrl, createLogger('silent'), queue, prefix, 200);
    let runs = 0;
    runner.register('tick', 100, async () => {
      runs++;
    });
    await runner.start();
    const redis = new Redis(testRedisUrl);
    try {
      await runner.check();
      expect(await runner.schedulers()).toEqual(['tick']);
      await waitFor(() => runs >= 2);
      // Every key of the queue is wiped while it runs (a FLUSHALL, scoped to this test's prefix).
      const keys = await redis.keys(`${prefix}:*`);
      expect(keys.length).toBeGreaterThan(0);
      await redis.del(...keys);
      expect(await runner.schedulers()).toEqual([]);
      // The watchdog re-creates the schedule from the registered jobs, and the job runs again.
      const before = runs;
      await waitFor(() => runs >= before + 2, 10_000);
      expect(await runner.schedulers()).toEqual(['tick']);
    } finally {
      await runner.stop();
      const left = await redis.keys(`${prefix}:*`);
      if (left.length) await redis.del(...left);
      await redis.quit();
    }
  });

  it('reports Redis as unavailable to readiness when it cannot be reached', async () => {
    const runner = new BullMqJobRunner(
      'redis://127.0.0.1:1',
      createLogger('silent'),
      `custos-test-${randomUUID()}`,
    );
    await expect(
      Promise.race([
        runner.check(),
        new Promise((_, rej) => setTimeout(() => rej(new Error('timeout')), 3000).unref()),
      ]),
    ).rejects.toThrow();
    await runner.stop();
  });

  it('runs jobs in-process without overlapping a slow run', async () => {
    const runner = new InProcessJobRunner(createLogger('silent'));
    let concurrent = 0;
    let maxConcurrent = 0;
    let runs = 0;
    runner.register('slow', 20, async () => {
      concurrent++;
      maxConcurrent = Math.max(maxConcurrent, concurrent);
      await new Promise((r) => setTimeout(r, 100));
      concurrent--;
      runs++;
    });
    await runner.start();
    await waitFor(() => runs >= 2);
    await runner.stop();
    expect(maxConcurrent).toBe(1);
  });

  it('keeps running after a job throws', async () => {
    const runner = new InProcessJobRunner(createLogger('silent'));
    let calls = 0;
    runner.register('flaky', 20, async () => {
      calls++;
      throw new Error('boom');
    });
    await runner.start();
    await waitFor(() => calls >= 3);
    await runner.stop();
  });
});

describe('Custos with REDIS_URL', () => {
  it('runs its background jobs on BullMQ and reports Redis in readiness', async () => {
    const { startTestApp } = await import('../../support/app.js');
    const app = await startTestApp({ REDIS_URL: testRedisUrl });
    try {
      expect(app.custos.runtime.jobs.kind).toBe('bullmq');
      const ready = await app.request('GET', '/readyz');
      expect(ready.status).toBe(200);
      expect(ready.body.checks.jobs).toBe('ok');
    } finally {
      await app.close();
    }
  });
});
