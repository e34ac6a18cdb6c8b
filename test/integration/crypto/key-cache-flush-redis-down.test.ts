/**
 * A key-cache flush (POST /v1/tenants/{id}/key-backend/flush) while Redis, which carries it to the other Custos
 * processes, is down or paused: an infrastructure failure, so 503 with Retry-After (the admin retries), never a
 * 500, and never an answer held for as long as Redis does not answer. Found by the Redis fault run
 * (test/faults/redis.test.ts).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { Redis } from 'ioredis';
import { startTestApp, type TestApp } from '../../support/app.js';
import { createTenant, type TenantFixture } from '../../support/factories.js';
import { startPrivateRedis, type PrivateRedis } from '../../support/processes.js';

jest.setTimeout(60_000);

let redis: PrivateRedis;
let redisStopped = false;
/** Redis started again on the same port after the last test, so that the app can shut down. */
let restarted: ChildProcess | undefined;
let app: TestApp;
let t: TenantFixture;

const flush = () => app.request('POST', `/v1/tenants/${t.tenantId}/key-backend/flush`, { key: t.adminKey });

beforeAll(async () => {
  redis = await startPrivateRedis();
  // The api role (the one that serves the flush): a BullMQ worker's close() can hang after Redis restarted
  // (taskforcesh/bullmq#4656), which is not what this file is about.
  app = await startTestApp({ REDIS_URL: redis.url, CUSTOS_ROLE: 'api' });
  t = await createTenant(app);
});

afterAll(async () => {
  await app?.close();
  if (!redisStopped) await redis?.stop();
  if (restarted) {
    restarted.kill('SIGKILL');
    await new Promise((r) => restarted!.once('exit', r));
  }
});

it('answers 503 while Redis is paused, and flushes everywhere again once it answers', async () => {
  expect((await flush()).body).toEqual({ flushed: true, replicasNotified: true });
  // A pause longer than this test's patience: an answer that waited for Redis would come too late.
  const pauser = new Redis(redis.url, { maxRetriesPerRequest: 0 });
  await pauser.call('CLIENT', 'PAUSE', '8000', 'ALL');
  pauser.disconnect();
  const paused = await flush();
  expect({ status: paused.status, error: paused.body.error }).toEqual({
    status: 503,
    error: 'temporarily_unavailable',
  });
  expect(paused.headers['retry-after']).toBeDefined();
  // Once the pause is over, a flush reaches the other processes again.
  let after = await flush();
  for (let i = 0; i < 100 && after.status !== 200; i++) {
    await new Promise((r) => setTimeout(r, 200));
    after = await flush();
  }
  expect(after.body).toEqual({ flushed: true, replicasNotified: true });
});

it('answers 503 with Retry-After when Redis is gone, never 500, and flushes everywhere again once it is back', async () => {
  await redis.stop();
  redisStopped = true;
  const res = await flush();
  expect({ status: res.status, error: res.body.error }).toEqual({
    status: 503,
    error: 'temporarily_unavailable',
  });
  expect(res.headers['retry-after']).toBeDefined();
  restarted = spawn('redis-server', ['--port', new URL(redis.url).port, '--save', '', '--appendonly', 'no'], {
    stdio: 'ignore',
  });
  // Once it is back, a flush reaches the other processes again.
  let after = await flush();
  for (let i = 0; i < 100 && after.status !== 200; i++) {
    await new Promise((r) => setTimeout(r, 200));
    after = await flush();
  }
  expect(after.body).toEqual({ flushed: true, replicasNotified: true });
});
