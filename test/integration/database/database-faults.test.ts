/**
 * A silent database partition: the connections between Custos and PostgreSQL stay open but carry nothing (a
 * TCP proxy blackholes them, and they stay dead after the network is back, like a lost NAT entry). The token
 * endpoint must answer 503 meanwhile, never hang, 401 or 500; readiness must say so; and both must recover once
 * the network is back.
 */
import pg from 'pg';
import { adminDatabaseUrl, databaseUrlFor, workerDatabaseName } from '../../support/env.js';
import { startTestApp, type TestApp } from '../../support/app.js';
import {
  basicAuth,
  createConnector,
  createTenant,
  importConnection,
  trustIdentityProvider,
  uniqueSecret,
  type TenantFixture,
} from '../../support/factories.js';
import { startTestIdp, type TestIdp } from '../../support/idp.js';
import { startTcpProxy, type TcpProxy } from '../../support/tcp-proxy.js';

const EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
const JWT_TYPE = 'urn:ietf:params:oauth:token-type:jwt';
/** Generous: the point is that nothing hangs and everything recovers, not how fast. */
const SETTLES_WITHIN_MS = 30_000;
const RECOVERS_WITHIN_MS = 60_000;

let proxy: TcpProxy;
let idp: TestIdp;
let app: TestApp;
let t: TenantFixture;
let authorization: string;
const accessToken = uniqueSecret('gho');

/** Fails the test (instead of hanging it) when a request does not settle. */
async function settles<T>(p: Promise<T>, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      p,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`${what} did not settle`)), SETTLES_WITHIN_MS);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

async function eventually(what: string, check: () => Promise<boolean>): Promise<void> {
  const until = Date.now() + RECOVERS_WITHIN_MS;
  while (Date.now() < until) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error(`${what} did not recover`);
}

async function exchange() {
  return settles(
    app.request('POST', '/oauth/token', {
      payload: new URLSearchParams({
        grant_type: EXCHANGE,
        subject_token: await idp.token({ sub: 'alice' }),
        subject_token_type: JWT_TYPE,
        audience: 'github',
      }).toString(),
      headers: { 'content-type': 'application/x-www-form-urlencoded', authorization },
    }),
    'a token exchange',
  );
}

const ready = () => settles(app.request('GET', '/readyz'), '/readyz');
const adminRead = () =>
  settles(
    app.request('GET', `/v1/tenants/${t.tenantId}/users/alice/connections`, { key: t.adminKey }),
    'an admin read',
  );

beforeAll(async () => {
  const u = new URL(adminDatabaseUrl);
  proxy = await startTcpProxy(u.hostname, Number(u.port || 5432));
  const viaProxy = new URL(databaseUrlFor(workerDatabaseName()));
  viaProxy.port = String(proxy.port);
  idp = await startTestIdp();
  app = await startTestApp({
    DATABASE_URL: viaProxy.toString(),
    CUSTOS_OUTBOUND_ALLOW_HOSTS: idp.hostPort,
    // Short limits keep the test short; the defaults behave the same, only slower.
    CUSTOS_DB_CONNECT_TIMEOUT_MS: '2000',
    CUSTOS_DB_STATEMENT_TIMEOUT_MS: '4000',
    CUSTOS_DB_BATCH_TIMEOUT_MS: '2000',
  });
  t = await createTenant(app);
  await trustIdentityProvider(app, t, idp);
  await importConnection(app, t, 'alice', 'github', { type: 'oauth2', accessToken });
  authorization = basicAuth(await createConnector(app, t, { name: 'mcp', delegation: 'user_token' }));
});

afterAll(async () => {
  proxy.restore();
  await app?.close();
  await proxy.close();
  await idp.close();
});

describe('the token endpoint, admin API and readiness under database faults', () => {
  it('gives 503 (not a hang, 401 or 500) while it lasts, and recovers once the network is back', async () => {
    // Healthy: tokens flow and every pool connection is warm.
    const warm = await Promise.all(Array.from({ length: 10 }, () => exchange()));
    for (const res of warm) expect(res.body.access_token).toBe(accessToken);
    expect((await ready()).status).toBe(200);

    proxy.blackhole();
    const during = await Promise.all(Array.from({ length: 10 }, () => exchange()));
    for (const res of during) {
      expect(res.status).toBe(503);
      expect(res.body.error).toBe('temporarily_unavailable');
      expect(res.headers['retry-after']).toBeDefined();
      expect(res.raw).not.toContain(accessToken);
    }
    expect((await app.request('GET', '/metrics')).raw).toMatch(
      /custos_db_batch_failures_total\{batcher="decisions",reason="timed_out"\} [1-9]/,
    );
    // A second wave: the first one's timed-out batches freed their slots.
    const again = await Promise.all(Array.from({ length: 5 }, () => exchange()));
    expect(again.map((r) => r.status)).toEqual([503, 503, 503, 503, 503]);
    const readiness = await ready();
    expect(readiness.status).toBe(503);
    expect(readiness.body.checks.database).toBe('unavailable');
    // Admin reads go through TypeORM, not the batchers: their timed-out connections must not be reused either.
    const admin = await Promise.all(Array.from({ length: 5 }, () => adminRead()));
    for (const res of admin) {
      expect(res.status).toBe(503);
      expect(res.body.error).toBe('temporarily_unavailable');
    }

    proxy.restore();
    // The blackholed connections stay dead: Custos must drop them and open new ones.
    expect(proxy.counts().dead).toBeGreaterThan(0);
    await eventually('the admin API', async () => (await adminRead()).status === 200);
    const adminAfter = await Promise.all(Array.from({ length: 5 }, () => adminRead()));
    expect(adminAfter.map((r) => r.status)).toEqual([200, 200, 200, 200, 200]);
    await eventually('the token endpoint', async () => (await exchange()).status === 200);
    const after = await Promise.all(Array.from({ length: 10 }, () => exchange()));
    for (const res of after) expect(res.body.access_token).toBe(accessToken);
    await eventually('/readyz', async () => (await ready()).status === 200);
  }, 240_000);

  it('drops a connection whose statement timed out instead of handing it to the next request', async () => {
    // Only admin reads here (TypeORM's path, not the batchers'): every pool connection hangs on a statement.
    await eventually('the admin API', async () => (await adminRead()).status === 200);
    proxy.blackhole();
    const during = await Promise.all(Array.from({ length: 5 }, () => adminRead()));
    for (const res of during) expect(res.status).toBe(503);
    proxy.restore();
    await eventually('the admin API', async () => (await adminRead()).status === 200);
    const after = await Promise.all(Array.from({ length: 5 }, () => adminRead()));
    expect(after.map((r) => r.status)).toEqual([200, 200, 200, 200, 200]);
  }, 240_000);

  it('answers 503 and releases nothing while the audit INSERT cannot commit, then serves again', async () => {
    await eventually('the token endpoint', async () => (await exchange()).status === 200);
    // Another session holds the audit table: the group commit waits on the lock, past its deadline.
    const blocker = new pg.Client({ connectionString: databaseUrlFor(workerDatabaseName()) });
    await blocker.connect();
    try {
      await blocker.query('BEGIN');
      await blocker.query('LOCK TABLE audit_events IN EXCLUSIVE MODE');
      const during = await Promise.all(Array.from({ length: 5 }, () => exchange()));
      for (const res of during) {
        expect(res.status).toBe(503);
        expect(res.body.error).toBe('temporarily_unavailable');
        expect(res.raw).not.toContain(accessToken);
      }
      await blocker.query('ROLLBACK');
      await eventually('the token endpoint', async () => (await exchange()).status === 200);
    } finally {
      await blocker.end();
    }
  }, 120_000);

  it('answers 503 when connections are reset while statements are in flight, and recovers', async () => {
    await eventually('the token endpoint', async () => (await exchange()).status === 200);
    // Slow enough that the cut lands while the batched statements are on the wire.
    proxy.delay(300);
    const inFlight = Promise.all(Array.from({ length: 10 }, () => exchange()));
    await new Promise((r) => setTimeout(r, 150));
    proxy.cut();
    for (const res of await inFlight) {
      expect([200, 503]).toContain(res.status);
      if (res.status === 503) expect(res.body.error).toBe('temporarily_unavailable');
    }
    proxy.restore();
    await eventually('the token endpoint', async () => (await exchange()).status === 200);
  }, 120_000);

  it('answers through a slow network when the statements still fit their limits', async () => {
    proxy.delay(200);
    try {
      const res = await exchange();
      expect(res.status).toBe(200);
      expect(res.body.access_token).toBe(accessToken);
    } finally {
      proxy.restore();
    }
  }, 60_000);
});
