/**
 * Redis holds only copies and signals, so Custos (role all) must start, serve and stop while it is down: start-up
 * goes on without it, the token endpoint and the admin API answer, readiness says that jobs are unavailable, and
 * shutdown does not wait for a Redis that is not there. Once a redis-server appears at REDIS_URL, the same process
 * picks it up without a restart: jobs become ready, the maintenance schedules are made, and a refresh-ahead job
 * that could not be queued meanwhile is re-created from PostgreSQL and runs, with no traffic to trigger it.
 *
 * The machine's shared Redis is never touched: REDIS_URL names a free port, where this file later starts its own
 * redis-server (with a password, which must never reach the logs).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { Redis } from 'ioredis';
import { DataKeyService } from '../../../src/crypto/data-key.service.js';
import type { BullMqJobRunner } from '../../../src/jobs/job-runner.js';
import { startTestApp, type TestApp } from '../../support/app.js';
import { startOAuthProvider, type TestOAuthProvider } from '../../support/oauth-provider.js';
import { freePort } from '../../support/processes.js';
import {
  PUBLIC_URL,
  REDIRECT,
  refreshClient,
  setUpRefreshTenant,
  type RefreshFixture,
} from '../../support/refresh-fixture.js';

jest.setTimeout(120_000);

const CLIENT = refreshClient();
const PASSWORD = `redis-pw-${Math.random().toString(36).slice(2)}`;
let port: number;
let redisUrl: string;
let op: TestOAuthProvider;
let server: ChildProcess | undefined;
const apps: TestApp[] = [];

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Resolves with `p`, or fails naming `what` when it has not settled within `ms` (a hang, not a slow run). */
async function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      p,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`${what} did not return within ${ms} ms`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

async function waitFor(what: string, cond: () => Promise<boolean>, ms: number): Promise<void> {
  const until = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > until) throw new Error(`${what}: not within ${ms} ms`);
    await sleep(200);
  }
}

async function start(env: Record<string, string> = {}): Promise<TestApp> {
  const app = await within(
    startTestApp({
      ...env,
      REDIS_URL: redisUrl,
      CUSTOS_PUBLIC_URL: PUBLIC_URL,
      CUSTOS_OUTBOUND_ALLOW_HOSTS: op.hostPort,
    }),
    30_000,
    'start-up without Redis',
  );
  apps.push(app);
  return app;
}

async function close(app: TestApp): Promise<void> {
  apps.splice(apps.indexOf(app), 1);
  await within(app.close(), 5_000, 'shutdown');
}

/** Starts redis-server at REDIS_URL's port (nothing kept on disk) and waits until it answers. */
async function startRedisServer(): Promise<void> {
  server = spawn(
    'redis-server',
    [
      '--port',
      String(port),
      '--bind',
      '127.0.0.1',
      '--requirepass',
      PASSWORD,
      '--save',
      '',
      '--appendonly',
      'no',
    ],
    { stdio: 'ignore' },
  );
  await waitFor(
    'redis-server answers',
    async () => {
      const probe = new Redis(redisUrl, {
        lazyConnect: true,
        maxRetriesPerRequest: 0,
        retryStrategy: () => null,
      });
      try {
        await probe.connect();
        return (await probe.ping()) === 'PONG';
      } catch {
        return false;
      } finally {
        probe.disconnect();
      }
    },
    10_000,
  );
}

async function stopRedisServer(): Promise<void> {
  const child = server;
  server = undefined;
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGKILL');
  await exited;
}

const readyz = async (app: TestApp) => (await app.request('GET', '/readyz')).body as Record<string, any>;

function redisLogs(app: TestApp) {
  const lines = app.logs.map((l) => JSON.parse(l) as Record<string, any>);
  return lines.filter((l) => typeof l.msg === 'string' && l.msg.startsWith('redis connection'));
}

beforeAll(async () => {
  port = await freePort();
  redisUrl = `redis://:${PASSWORD}@127.0.0.1:${port}`;
  op = await startOAuthProvider({
    clients: [{ ...CLIENT, redirect_uris: [REDIRECT] }],
    accessTokenTtlSeconds: 3600,
    refreshTokenRotation: true,
  });
});

afterAll(async () => {
  for (const app of [...apps]) await app.close();
  await stopRedisServer();
  await op?.close();
});

it('starts and serves with nothing listening at REDIS_URL, says jobs are unavailable, and stops without waiting for Redis', async () => {
  const app = await start();
  expect(app.custos.runtime.jobs.kind).toBe('bullmq');
  const fx: RefreshFixture = await setUpRefreshTenant(app, op, CLIENT);

  const fresh = await fx.connect('u-fresh', 3600);
  const served = await fx.exchange('u-fresh');
  expect(served.status).toBe(200);
  expect(served.body.access_token).toBe(fresh.access_token);
  // An expired token is refreshed on the request path; its next refresh cannot be queued, and that is no error.
  const expired = await fx.connect('u-expired', -5);
  const refreshed = await fx.exchange('u-expired');
  expect(refreshed.status).toBe(200);
  expect(refreshed.body.access_token).not.toBe(expired.access_token);
  expect(op.tokenRequests.refresh_token).toBe(1);

  const ready = await readyz(app);
  expect(ready.status).toBe('unavailable');
  expect(ready.checks).toEqual({ database: 'ok', keyBackend: 'ok', jobs: 'unavailable' });

  // Each connection reports the outage once with its purpose, not at every reconnect attempt, and never its URL.
  const errors = redisLogs(app).filter((l) => l.msg === 'redis connection error');
  const purposes = errors.map((l) => l.purpose as string);
  expect(new Set(purposes)).toEqual(
    new Set([
      'jobs',
      'jobs worker',
      'refresh queue',
      'refresh worker',
      'key cache bus (publish)',
      'key cache bus (subscribe)',
      'rate limiter',
    ]),
  );
  expect(purposes.length).toBe(new Set(purposes.map((p, i) => `${p}:${errors[i].err.reason}`)).size);
  const all = app.logs.join('');
  expect(all).not.toContain(PASSWORD);
  expect(all).not.toContain('redis://');

  await close(app);
});

it('in the api role, which runs no jobs but queues refreshes in Redis, says jobs are unavailable too', async () => {
  const app = await start({ CUSTOS_ROLE: 'api' });
  // The api role's own runner is in-process and empty: its readiness must not answer for Redis by it alone.
  expect(app.custos.runtime.jobs.kind).toBe('in-process');
  const ready = await readyz(app);
  expect(ready.status).toBe('unavailable');
  expect(ready.checks).toEqual({ database: 'ok', keyBackend: 'ok', jobs: 'unavailable' });
  await close(app);
});

describe('when Redis comes up after start-up', () => {
  let app: TestApp;
  let fx: RefreshFixture;
  let dueSoon: string;

  beforeAll(async () => {
    app = await start();
    fx = await setUpRefreshTenant(app, op, CLIENT);
  });

  it('becomes ready without a restart, makes the schedules, and runs the refreshes it could not queue before', async () => {
    expect((await readyz(app)).checks.jobs).toBe('unavailable');
    // Due at half its life, 10 s from now: its job cannot be queued while Redis is down.
    const c = await fx.connect('u-due-soon', 20);
    dueSoon = c.connectionId;
    const before = op.tokenRequests.refresh_token;
    // The tenant's data key is cached by now; a flush published while this process cannot hear it would be lost.
    const dataKeys = app.custos.app.get(DataKeyService);
    const [{ data_key_id: dataKeyId }] = await app.custos.runtime.dataSource.query(
      'SELECT data_key_id FROM connections WHERE id = $1',
      [dueSoon],
    );
    expect((await fx.exchange('u-due-soon')).status).toBe(200);
    expect(dataKeys.isCached(fx.t.tenantId, dataKeyId)).toBe(true);

    await startRedisServer();
    await waitFor('jobs ready', async () => (await readyz(app)).checks.jobs === 'ok', 20_000);
    // Listening again, the process drops what it cached while it could not hear the others' flushes.
    await waitFor(
      'key cache bus listening',
      async () => !dataKeys.isCached(fx.t.tenantId, dataKeyId),
      15_000,
    );
    expect(app.logs.some((l) => l.includes('key cache bus: listening again'))).toBe(true);
    expect(await readyz(app)).toEqual({
      status: 'ready',
      checks: { database: 'ok', keyBackend: 'ok', jobs: 'ok' },
    });
    const runner = app.custos.runtime.jobs as BullMqJobRunner;
    await waitFor('schedules made', async () => (await runner.schedulers()).length > 0, 10_000);
    expect(await runner.schedulers()).toEqual(
      expect.arrayContaining(['connections.mark-expired', 'key-backends.migrate']),
    );
    // The key-cache bus reaches the other processes again (its connection may come back a moment later).
    const flush = () =>
      app.request('POST', `/v1/tenants/${fx.t.tenantId}/key-backend/flush`, { key: fx.t.adminKey });
    await waitFor('flush reaches the others', async () => (await flush()).status === 200, 15_000);
    expect((await flush()).body).toEqual({ flushed: true, replicasNotified: true });

    // No traffic: only the refresh-ahead job, re-created from PostgreSQL, can refresh the token in time.
    const db = app.custos.runtime.dataSource;
    await waitFor(
      'refreshed ahead',
      async () =>
        (
          await db.query(
            "SELECT count(*)::int AS n FROM audit_events WHERE action = 'connection.refreshed' AND connection_id = $1",
            [dueSoon],
          )
        )[0].n === 1,
      30_000,
    );
    expect(op.tokenRequests.refresh_token).toBe(before + 1);
    const [row] = await db.query('SELECT status, expires_at FROM connections WHERE id = $1', [dueSoon]);
    expect(row.status).toBe('active');
    expect((row.expires_at as Date).getTime()).toBeGreaterThan(Date.now() + 60_000);
    const restored = redisLogs(app).filter((l) => l.msg === 'redis connection ready again');
    expect(restored.map((l) => l.purpose)).toEqual(expect.arrayContaining(['jobs', 'refresh worker']));
  });

  it('stops without waiting for Redis when it went away again', async () => {
    await stopRedisServer();
    await waitFor('jobs unavailable', async () => (await readyz(app)).checks.jobs === 'unavailable', 10_000);
    await close(app);
    expect(app.logs.join('')).not.toContain(PASSWORD);
  });
});
