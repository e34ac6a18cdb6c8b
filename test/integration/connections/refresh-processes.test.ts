/**
 * Background refresh across real processes: two api processes and two workers (CUSTOS_ROLE), started from
 * source, sharing PostgreSQL and a private Redis, against oidc-provider with refresh-token rotation.
 *
 * - A worker killed with SIGKILL between the provider's answer and the commit (a failpoint): the rotated
 *   token it received is lost, and the next refresh (another worker, once the lease and the job's lock run
 *   out) marks the connection needs_reauth with the reason "refresh interrupted"; the next exchange asks
 *   for consent. Never silently broken.
 * - 100 concurrent exchanges of an expired token across the two api processes: one provider call.
 * - Refresh ahead with no traffic, with Redis wiped (FLUSHALL) while the jobs wait: every due refresh
 *   still happens before its token expires, once.
 */
import { startTestApp, type TestApp } from '../../support/app.js';
import { startOAuthProvider, type TestOAuthProvider } from '../../support/oauth-provider.js';
import {
  spawnCustos,
  startPrivateRedis,
  type CustosProcess,
  type PrivateRedis,
} from '../../support/processes.js';
import {
  PUBLIC_URL,
  REDIRECT,
  refreshClient,
  setUpRefreshTenant,
  type RefreshFixture,
} from '../../support/refresh-fixture.js';

jest.setTimeout(120_000);

const CLIENT = refreshClient();
const PREFIX = 'custos-procs';
const LEASE_SECONDS = 5;

let op: TestOAuthProvider;
let redis: PrivateRedis;
let app: TestApp;
let fx: RefreshFixture;
const procs: CustosProcess[] = [];

const waitFor = async (what: string, cond: () => Promise<boolean>, ms = 30_000) => {
  const until = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > until) throw new Error(`${what}: not within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
};

const sql = (text: string, params: unknown[] = []) => app.custos.runtime.dataSource.query(text, params);

async function start(name: string, role: 'api' | 'worker', extra: Record<string, string> = {}) {
  const config = app.custos.runtime.config;
  const p = await spawnCustos(name, {
    CUSTOS_ROLE: role,
    DATABASE_URL: config.databaseUrl!,
    CUSTOS_MIGRATIONS_RUN: 'false',
    CUSTOS_ROOT_KEYS: config.rootKeys!,
    CUSTOS_BOOTSTRAP_ADMIN_KEY: app.bootstrapKey,
    CUSTOS_PUBLIC_URL: PUBLIC_URL,
    CUSTOS_OUTBOUND_ALLOW_HOSTS: op.hostPort,
    CUSTOS_DB_POOL_SIZE: '4',
    REDIS_URL: redis.url,
    CUSTOS_QUEUE_PREFIX: PREFIX,
    CUSTOS_REFRESH_SWEEP_SECONDS: '1',
    CUSTOS_REFRESH_LEASE_SECONDS: String(LEASE_SECONDS),
    ...extra,
  });
  procs.push(p);
  return p;
}

let api1: CustosProcess;
let api2: CustosProcess;

beforeAll(async () => {
  [op, redis] = await Promise.all([
    startOAuthProvider({
      clients: [{ ...CLIENT, redirect_uris: [REDIRECT] }],
      accessTokenTtlSeconds: 3600,
      refreshTokenRotation: true,
    }),
    startPrivateRedis(),
  ]);
  // The test's own instance, for set-up and reads: an api that runs no background work.
  app = await startTestApp({
    CUSTOS_ROLE: 'api',
    CUSTOS_PUBLIC_URL: PUBLIC_URL,
    CUSTOS_OUTBOUND_ALLOW_HOSTS: op.hostPort,
    REDIS_URL: redis.url,
    CUSTOS_QUEUE_PREFIX: PREFIX,
  });
  fx = await setUpRefreshTenant(app, op, CLIENT);
  [api1, api2] = await Promise.all([start('api1', 'api'), start('api2', 'api')]);
});

afterAll(async () => {
  await Promise.all(procs.map((p) => p.stop()));
  await app?.close();
  await redis?.stop();
  await op?.close();
});

beforeEach(() => op.reset());

it('serves the API on api processes and only probes and metrics on workers', async () => {
  const worker = await start('probe-worker', 'worker');
  try {
    expect((await fetch(`${worker.url}/healthz`)).status).toBe(200);
    expect((await fetch(`${worker.url}/readyz`)).status).toBe(200);
    expect((await fetch(`${worker.url}/oauth/token`, { method: 'POST' })).status).toBe(404);
    expect((await fetch(`${worker.url}/v1/tenants`)).status).toBe(404);
    const token = await fetch(`${api1.url}/oauth/token`, { method: 'POST' });
    expect(token.status).toBe(400);
  } finally {
    await worker.stop();
    procs.splice(procs.indexOf(worker), 1);
  }
});

it('recovers from a worker killed between the provider’s answer and the commit: "refresh interrupted", never silent', async () => {
  const c = await fx.connect('u-killed', -5);
  const [before] = await sql('SELECT version FROM connections WHERE id = $1', [c.connectionId]);
  // The only worker stops dead right after the provider rotated the refresh token.
  const doomed = await start('doomed-worker', 'worker', { CUSTOS_TEST_FAILPOINTS: 'refresh.after-provider' });
  await doomed.waitForLog((l) => l.msg === 'failpoint reached' && l.connectionId === c.connectionId);
  expect(op.tokenRequests.refresh_token).toBe(1);
  await doomed.kill9();
  procs.splice(procs.indexOf(doomed), 1);
  const [held] = await sql('SELECT status, version, refresh_lease_until FROM connections WHERE id = $1', [
    c.connectionId,
  ]);
  // Nothing was committed: the row still holds the old (now rotated away) refresh token, under the lease.
  expect(held.status).toBe('active');
  expect(held.version).toBe(before.version);
  expect(held.refresh_lease_until).not.toBeNull();

  // Two healthy workers. Once the lease and the job's lock run out, one of them retries with the stored
  // token, the provider refuses it, and the connection says why.
  await Promise.all([start('worker1', 'worker'), start('worker2', 'worker')]);
  await waitFor(
    'needs_reauth',
    async () =>
      (await sql('SELECT status FROM connections WHERE id = $1', [c.connectionId]))[0].status ===
      'needs_reauth',
  );
  const events = await sql(
    `SELECT details FROM audit_events WHERE connection_id = $1 AND action = 'connection.needs_reauth'`,
    [c.connectionId],
  );
  expect(events).toHaveLength(1);
  expect(events[0].details.reason).toBe('refresh interrupted');
  expect(op.tokenRequests.refresh_token).toBe(2);
  const res = await fx.exchange('u-killed', api2.url);
  expect(res.status).toBe(400);
  expect(res.body.error).toBe('consent_required');
  expect(res.body.connect_uri).toMatch(/^https:\/\/custos\.example\.test\/connect\//);
});

it('makes one provider call for 100 concurrent exchanges of an expired token across two api processes and two workers', async () => {
  expect(procs.filter((p) => p.name.startsWith('worker'))).toHaveLength(2);
  const c = await fx.connect('u-herd', -5);
  op.faults.delayMs = 300; // holds the refresh long enough for every other caller to queue behind it
  const results = await Promise.all(
    Array.from({ length: 100 }, (_, i) => fx.exchange('u-herd', i % 2 ? api1.url : api2.url)),
  );
  expect(results.map((r) => r.status)).toEqual(Array(100).fill(200));
  const tokens = new Set(results.map((r) => r.body.access_token as string));
  expect(tokens.size).toBe(1);
  expect(tokens.has(c.access_token)).toBe(false);
  expect(op.tokenRequests.refresh_token).toBe(1);
  const [r] = await sql('SELECT refresh_lease_until FROM connections WHERE id = $1', [c.connectionId]);
  expect(r.refresh_lease_until).toBeNull();
});

it('refreshes every due token ahead of expiry with no traffic, even when Redis is wiped while the jobs wait', async () => {
  const N = 12;
  const conns: { id: string; user: string; token: string; expiresAt: number }[] = [];
  for (let i = 0; i < N; i++) {
    // Lifetimes of 20–31 s: due at half their life, 10–15.5 s from now.
    const c = await fx.connect(`u-ahead-${i}`, 20 + i);
    const [stored] = await sql('SELECT expires_at FROM connections WHERE id = $1', [c.connectionId]);
    conns.push({
      id: c.connectionId,
      user: `u-ahead-${i}`,
      token: c.access_token,
      expiresAt: (stored.expires_at as Date).getTime(),
    });
  }
  op.reset();
  const queue = app.custos.refreshQueue!;
  // The workers' sweepers (and the imports) have queued every refresh as a delayed job...
  await waitFor('jobs queued', async () => (await queue.counts()).delayed >= N, 10_000);
  // ...which Redis now forgets.
  expect(await redis.client.flushall()).toBe('OK');
  expect((await queue.counts()).delayed).toBe(0);
  // The sweepers put them back from PostgreSQL before they are due.
  await waitFor('jobs re-created', async () => (await queue.counts()).delayed >= N, 5_000);
  await waitFor(
    'all refreshed',
    async () =>
      (
        await sql(
          `SELECT count(*)::int AS n FROM audit_events WHERE action = 'connection.refreshed' AND connection_id = ANY($1)`,
          [conns.map((c) => c.id)],
        )
      )[0].n >= N,
    40_000,
  );
  const refreshed: { connection_id: string; occurred_at: Date }[] = await sql(
    `SELECT connection_id, occurred_at FROM audit_events WHERE action = 'connection.refreshed' AND connection_id = ANY($1)`,
    [conns.map((c) => c.id)],
  );
  // Each one exactly once, and before its old token expired.
  expect(refreshed).toHaveLength(N);
  expect(op.tokenRequests.refresh_token).toBe(N);
  for (const c of conns) {
    const event = refreshed.find((e) => e.connection_id === c.id)!;
    expect(event.occurred_at.getTime()).toBeLessThan(c.expiresAt);
  }
  // The connector gets the new token, with no refresh on its path.
  const res = await fx.exchange(conns[0].user, api1.url);
  expect(res.status).toBe(200);
  expect(res.body.access_token).not.toBe(conns[0].token);
  expect(op.tokenRequests.refresh_token).toBe(N);
});
