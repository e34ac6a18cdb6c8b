/**
 * Fault run for Redis (npm run test:faults): Custos (api and worker in one process) uses a private redis-server for
 * its BullMQ refresh queue and maintenance jobs, the key-cache bus and the shared failure counters of the rate
 * limiter. Under a steady token-exchange load, admin writes, failed client authentications and key-cache flushes,
 * with tokens that live 40 s and are refreshed ahead by the worker (oidc-provider with refresh-token rotation),
 * Redis is paused (CLIENT PAUSE), wiped (FLUSHALL while the refresh jobs wait) and stopped and started again (empty).
 * Redis holds only copies, so token exchanges must not notice, and every due refresh must still happen, rebuilt
 * from PostgreSQL. Figures in bench/results/faults-redis-*.json.
 *
 * The machine's shared Redis (127.0.0.1:6379) is never touched: the run starts its own redis-server on a free port.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { Redis } from 'ioredis';
import { startTestApp, type TestApp } from '../support/app.js';
import { startOAuthProvider, type TestOAuthProvider } from '../support/oauth-provider.js';
import { freePort } from '../support/processes.js';
import {
  PUBLIC_URL,
  REDIRECT,
  refreshClient,
  setUpRefreshTenant,
  type RefreshFixture,
} from '../support/refresh-fixture.js';
import { auditedReleases, runClock, runScenario, sleep, writeResults, type Outcome } from './harness.js';

const RATE = Number(process.env.CUSTOS_FAULTS_RATE ?? 100);
const WRITE_RATE = 5;
const DENIED_RATE = 5;
const FLUSH_RATE = 1;
const WARM_MS = 5_000;
const OUTAGE_MS = 10_000;
const AFTER_MS = 30_000;
const SETTLE_MS = 60_000;
/** Users with traffic, and connections nobody reads: only the background refresh keeps those fresh. */
const BUSY = 20;
const IDLE = 10;
/** Token lifetime: refreshed ahead at half of it (20 s), so an outage of 10 s leaves 10 s to spare. */
const TOKEN_TTL_SECONDS = 40;
const PREFIX = `custos-faults-${Math.random().toString(36).slice(2, 8)}`;

const now = runClock();
const CLIENT = refreshClient();
let port: number;
let redisUrl: string;
let server: ChildProcess | undefined;
let op: TestOAuthProvider;
let app: TestApp;
let fx: RefreshFixture;
let basic: string;
let wrongBasic: string;
const idle: { id: string; user: string }[] = [];
const results: Record<string, unknown>[] = [];

/** Starts redis-server on `port` (nothing kept on disk) and waits until it answers. */
async function startRedisServer(): Promise<ChildProcess> {
  const child = spawn(
    'redis-server',
    ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--daemonize', 'no'],
    { stdio: 'ignore' },
  );
  const until = Date.now() + 10_000;
  for (;;) {
    const probe = new Redis(redisUrl, {
      lazyConnect: true,
      maxRetriesPerRequest: 0,
      retryStrategy: () => null,
    });
    try {
      await probe.connect();
      if ((await probe.ping()) === 'PONG') return child;
    } catch {
      if (Date.now() > until) {
        child.kill('SIGKILL');
        throw new Error('redis-server did not start');
      }
      await sleep(50);
    } finally {
      probe.disconnect();
    }
  }
}

/** A short-lived connection to the private server (CLIENT PAUSE holds every client, this one included). */
async function onRedis<T>(fn: (r: Redis) => Promise<T>): Promise<T> {
  const r = new Redis(redisUrl, { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
  await r.connect();
  try {
    return await fn(r);
  } finally {
    r.disconnect();
  }
}

async function stopRedisServer(): Promise<void> {
  const child = server!;
  server = undefined;
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  // SHUTDOWN NOSAVE: the server closes every connection and exits without writing anything.
  await onRedis((r) => r.call('SHUTDOWN', 'NOSAVE')).catch(() => undefined);
  await Promise.race([exited, sleep(5_000).then(() => child.kill('SIGKILL'))]);
  await exited;
}

const sql = <T = Record<string, unknown>>(text: string, params: unknown[] = []): Promise<T[]> =>
  app.custos.runtime.dataSource.query(text, params);

const form = (user: string) =>
  new URLSearchParams({
    grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange',
    subject_token: user,
    subject_token_type: 'urn:custos:params:oauth:token-type:user-id',
    audience: 'inhouse',
  }).toString();

async function exchange(id: string): Promise<Outcome> {
  const user = `busy-${Number(id.split('-').pop()) % BUSY}`;
  const res = await app.request('POST', '/oauth/token', {
    payload: form(user),
    headers: {
      'content-type': 'application/x-www-form-urlencoded',
      authorization: basic,
      'x-request-id': id,
    },
  });
  const released = res.status === 200 && typeof res.body.access_token === 'string';
  return { status: res.status, released, error: released ? undefined : res.body?.error };
}

/** A connector presenting a wrong secret: 401 every time (the limiter counts it in Redis, or here when it can't). */
async function denied(id: string): Promise<Outcome> {
  const res = await app.request('POST', '/oauth/token', {
    payload: form('busy-0'),
    headers: {
      'content-type': 'application/x-www-form-urlencoded',
      authorization: wrongBasic,
      'x-request-id': id,
    },
  });
  return { status: res.status, released: res.status === 401, error: res.body?.error };
}

async function adminWrite(id: string): Promise<Outcome> {
  const res = await app.request('PUT', `/v1/tenants/${fx.t.tenantId}/users/${id}/connections/openai`, {
    key: fx.t.adminKey,
    body: { type: 'api_key', apiKey: `sk-${id}` },
    headers: { 'x-request-id': id },
  });
  return { status: res.status, released: res.status === 200 || res.status === 201, error: res.body?.error };
}

/** Drops the tenant's cached data keys in every process: the one admin call that needs Redis (the bus). */
async function flush(id: string): Promise<Outcome> {
  const res = await app.request('POST', `/v1/tenants/${fx.t.tenantId}/key-backend/flush`, {
    key: fx.t.adminKey,
    headers: { 'x-request-id': id },
  });
  return { status: res.status, released: res.status === 200, error: res.body?.error };
}

/**
 * The background refreshes of the idle connections in [from, to]: how many, how much life the old token had left
 * at each (negative: it had expired first), and idle connections left with an expired token at the end.
 */
async function idleRefreshes(from: Date, expiryAtStart: Map<string, number>) {
  const events = await sql<{ connection_id: string; occurred_at: Date; details: { expiresAt: string } }>(
    `SELECT connection_id, occurred_at, details FROM audit_events
      WHERE action = 'connection.refreshed' AND connection_id = ANY($1) AND occurred_at >= $2
      ORDER BY occurred_at`,
    [idle.map((c) => c.id), from],
  );
  const expiry = new Map(expiryAtStart);
  let late = 0;
  let leastLifeLeftMs = Infinity;
  for (const e of events) {
    const left = expiry.get(e.connection_id)! - e.occurred_at.getTime();
    leastLifeLeftMs = Math.min(leastLifeLeftMs, left);
    if (left < 0) late++;
    expiry.set(e.connection_id, Date.parse(e.details.expiresAt));
  }
  const stale = await sql<{ n: number }>(
    `SELECT count(*)::int AS n FROM connections WHERE id = ANY($1) AND (status <> 'active' OR expires_at < now())`,
    [idle.map((c) => c.id)],
  );
  return {
    refreshes: events.length,
    late,
    leastLifeLeftMs: Number.isFinite(leastLifeLeftMs) ? leastLifeLeftMs : null,
    expiredOrBrokenAtEnd: stale[0].n,
  };
}

/** Idle connections with a refresh job in Redis (delayed, waiting or running), by BullMQ's job ids `<connection>-v<n>-f<n>`. */
async function idleWithJobs(): Promise<number> {
  const ids = await onRedis(async (r) => [
    ...(await r.zrange(`${PREFIX}:refresh:delayed`, 0, -1)),
    ...(await r.lrange(`${PREFIX}:refresh:wait`, 0, -1)),
    ...(await r.lrange(`${PREFIX}:refresh:active`, 0, -1)),
  ]);
  return idle.filter((c) => ids.some((j) => j.startsWith(`${c.id}-`))).length;
}

async function scenario(name: string, fault: () => Promise<Record<string, unknown> | void>) {
  const started = new Date();
  const expiryAtStart = new Map(
    (
      await sql<{ id: string; expires_at: Date }>(
        'SELECT id, expires_at FROM connections WHERE id = ANY($1)',
        [idle.map((c) => c.id)],
      )
    ).map((r) => [r.id, r.expires_at.getTime()]),
  );
  let faultDetails: Record<string, unknown> = {};
  const run = await runScenario({
    now,
    name,
    warmMs: WARM_MS,
    afterMs: AFTER_MS,
    settleMs: SETTLE_MS,
    readiness: async () => (await app.request('GET', '/readyz')).status,
    streams: [
      { name: 'x', ratePerSecond: RATE, send: exchange },
      { name: 'w', ratePerSecond: WRITE_RATE, send: adminWrite },
      // Nothing explains another answer than 401 for a wrong secret, outage or not.
      { name: 'd', ratePerSecond: DENIED_RATE, send: denied, expected: () => false },
      { name: 'f', ratePerSecond: FLUSH_RATE, send: flush },
    ],
    fault: async () => {
      faultDetails = (await fault()) ?? {};
    },
  });
  const released = run.samples.x.filter((s) => s.released).map((s) => s.id);
  const audited = await auditedReleases(sql, released);
  const acknowledged = run.samples.w.filter((s) => s.released).map((s) => s.id);
  const stored = await sql<{ user_id: string }>(
    `SELECT user_id FROM connections WHERE tenant_id = $1 AND user_id = ANY($2) AND revoked_at IS NULL`,
    [fx.t.tenantId, acknowledged],
  );
  const figures = {
    scenario: name,
    faultMs: run.faultEnd - run.faultStart,
    fault: faultDetails,
    tokenExchanges: run.figures.x,
    adminWrites: run.figures.w,
    wrongSecret: run.figures.d,
    keyCacheFlushes: run.figures.f,
    readinessRecoveredMs: run.readinessRecoveredMs,
    readinessUnavailableSamples: run.readinessUnavailableSamples,
    idleRefreshes: await idleRefreshes(started, expiryAtStart),
    tokensReleasedWithoutAuditEvent: released.length - audited.size,
    writesAcknowledged: acknowledged.length,
    dataLost: acknowledged.length - stored.length,
  };
  console.log(JSON.stringify(figures, null, 2));
  results.push(figures);
  return figures;
}

function expectHeld(f: Awaited<ReturnType<typeof scenario>>) {
  // Redis is only a copy: the token endpoint and admin writes never notice it.
  expect(f.tokenExchanges.failedByStatus).toEqual({});
  expect(f.tokenExchanges.hung).toBe(0);
  expect(f.adminWrites.failedByStatus).toEqual({});
  expect(f.adminWrites.hung).toBe(0);
  expect(f.wrongSecret.unexpected).toBe(0);
  expect(f.wrongSecret.hung).toBe(0);
  expect(f.keyCacheFlushes.unexpected).toBe(0);
  expect(f.keyCacheFlushes.hung).toBe(0);
  expect(f.tokensReleasedWithoutAuditEvent).toBe(0);
  expect(f.dataLost).toBe(0);
  // Every due background refresh happened, and before the token it replaced expired.
  expect(f.idleRefreshes.late).toBe(0);
  expect(f.idleRefreshes.expiredOrBrokenAtEnd).toBe(0);
  expect(f.readinessRecoveredMs).not.toBeNull();
}

beforeAll(async () => {
  port = await freePort();
  redisUrl = `redis://127.0.0.1:${port}`;
  [server, op] = await Promise.all([
    startRedisServer(),
    startOAuthProvider({
      clients: [{ ...CLIENT, redirect_uris: [REDIRECT] }],
      accessTokenTtlSeconds: TOKEN_TTL_SECONDS,
      refreshTokenRotation: true,
    }),
  ]);
  app = await startTestApp({
    CUSTOS_PUBLIC_URL: PUBLIC_URL,
    CUSTOS_OUTBOUND_ALLOW_HOSTS: op.hostPort,
    REDIS_URL: redisUrl,
    CUSTOS_QUEUE_PREFIX: PREFIX,
    CUSTOS_DB_POOL_SIZE: '10',
    CUSTOS_LOG_LEVEL: 'warn',
  });
  fx = await setUpRefreshTenant(app, op, CLIENT);
  for (let i = 0; i < BUSY; i++) await fx.connect(`busy-${i}`, TOKEN_TTL_SECONDS);
  for (let i = 0; i < IDLE; i++) {
    const c = await fx.connect(`idle-${i}`, TOKEN_TTL_SECONDS);
    idle.push({ id: c.connectionId, user: `idle-${i}` });
  }
  basic = 'Basic ' + Buffer.from(`${fx.connector.clientId}:${fx.connector.clientSecret}`).toString('base64');
  wrongBasic = 'Basic ' + Buffer.from(`${fx.connector.clientId}:not-the-secret`).toString('base64');
}, 120_000);

afterAll(async () => {
  if (results.length > 0) {
    const file = writeResults('redis', {
      startedAt: new Date(Date.now() - now()).toISOString(),
      redis: 'a private redis-server of the run (nothing on disk)',
      custos: 'one process, role all (api and worker), REDIS_URL set',
      load: {
        tokenExchangesPerSecond: RATE,
        adminWritesPerSecond: WRITE_RATE,
        wrongSecretPerSecond: DENIED_RATE,
        keyCacheFlushesPerSecond: FLUSH_RATE,
        busyUsers: BUSY,
        idleConnections: IDLE,
        tokenLifetimeSeconds: TOKEN_TTL_SECONDS,
        refreshSweepSeconds: app.custos.runtime.config.refreshSweepSeconds,
      },
      timeline: { warmMs: WARM_MS, outageMs: OUTAGE_MS, afterFaultMs: AFTER_MS },
      scenarios: results,
    });
    console.log(`fault figures written to ${file}`);
  }
  await app?.close();
  if (server) await stopRedisServer();
  await op?.close();
}, 120_000);

describe('Redis faults under steady load', () => {
  it('keeps serving through a pause (CLIENT PAUSE ALL)', async () => {
    const f = await scenario('pause', async () => {
      await onRedis((r) => r.call('CLIENT', 'PAUSE', String(OUTAGE_MS), 'ALL'));
      await sleep(OUTAGE_MS);
    });
    expectHeld(f);
  }, 600_000);

  it('rebuilds every waiting refresh job from PostgreSQL after a wipe (FLUSHALL)', async () => {
    let rebuilt: Promise<number | null> = Promise.resolve(null);
    const f = await scenario('flushall', async () => {
      const before = await idleWithJobs();
      const keys = await onRedis((r) => r.dbsize());
      await onRedis((r) => r.flushall());
      const wiped = Date.now();
      const after = await idleWithJobs();
      // In the background: until every idle connection has its job again (the sweeper reads PostgreSQL).
      rebuilt = (async () => {
        while (Date.now() - wiped < 25_000) {
          if ((await idleWithJobs()) === IDLE) return Date.now() - wiped;
          await sleep(200);
        }
        return null;
      })();
      return {
        keysWiped: keys,
        idleConnectionsWithJobBefore: before,
        idleConnectionsWithJobAfterWipe: after,
      };
    });
    const rebuiltMs = await rebuilt;
    f.fault.jobsRebuiltMs = rebuiltMs;
    console.log(`flushall: every idle connection had its refresh job again after ${rebuiltMs} ms`);
    expectHeld(f);
    expect(f.fault.idleConnectionsWithJobAfterWipe).toBe(0);
    expect(rebuiltMs).not.toBeNull();
  }, 600_000);

  it('keeps serving while Redis is stopped, and recovers when it starts again empty', async () => {
    const f = await scenario('restart', async () => {
      await stopRedisServer();
      await sleep(OUTAGE_MS);
      server = await startRedisServer();
    });
    expectHeld(f);
  }, 600_000);
});
