/**
 * Throttling of failed authentications and folded denial events, end to end: thousands of wrong client
 * secrets, unknown client ids and wrong admin keys against a real Custos (real PostgreSQL, real Redis),
 * in one process, across two instances sharing Redis, and with the limiter's Redis partitioned away.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import pg from 'pg';
import { DenialThrottle } from '../../../src/audit/denial-throttle.js';
import { RootKeyring } from '../../../src/common/root-keyring.js';
import { startTestApp, type TestApp } from '../../support/app.js';
import {
  createConnector,
  createTenant,
  importConnection,
  uniqueSecret,
  type SecretConnector,
  type TenantFixture,
} from '../../support/factories.js';
import { startBlackholeProxy, type BlackholeProxy } from '../../support/blackhole-proxy.js';
import { databaseUrlFor, testRedisUrl, workerDatabaseName } from '../../support/env.js';

const EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
const USER_ID_TYPE = 'urn:custos:params:oauth:token-type:user-id';
const N = 2000;
const CLIENT_LIMIT = 20;
const ADDRESS_LIMIT = 50;
const AUDITED = 5;
/** A window far longer than any test, so counts are exact. */
const LIMITS = {
  CUSTOS_RATE_LIMIT_WINDOW_SECONDS: '3600',
  CUSTOS_RATE_LIMIT_CREDENTIAL_FAILURES: String(CLIENT_LIMIT),
  CUSTOS_RATE_LIMIT_ADDRESS_FAILURES: String(ADDRESS_LIMIT),
  CUSTOS_AUDIT_DENIALS_PER_WINDOW: String(AUDITED),
};

jest.setTimeout(180_000);

interface Answer {
  status: number;
  headers: Record<string, string | string[] | number | undefined>;
  body: any;
}
interface Fixture {
  t: TenantFixture;
  victim: SecretConnector;
  other: SecretConnector;
  apiKey: string;
}

async function call(
  app: TestApp,
  from: string,
  method: 'GET' | 'POST',
  url: string,
  headers: Record<string, string> = {},
  payload?: string,
): Promise<Answer> {
  const res = await app.custos.app
    .getHttpAdapter()
    .getInstance()
    .inject({ method, url, headers, payload, remoteAddress: from });
  return { status: res.statusCode, headers: res.headers, body: res.body ? JSON.parse(res.body) : undefined };
}

const basic = (clientId: string, secret: string) =>
  'Basic ' + Buffer.from(`${encodeURIComponent(clientId)}:${encodeURIComponent(secret)}`).toString('base64');

/** A token exchange for alice's OpenAI key, as a trusted connector would ask for it. */
function exchange(app: TestApp, from: string, authorization?: string, headers: Record<string, string> = {}) {
  const form = new URLSearchParams({
    grant_type: EXCHANGE,
    subject_token: 'alice',
    subject_token_type: USER_ID_TYPE,
    audience: 'openai',
  }).toString();
  return call(
    app,
    from,
    'POST',
    '/oauth/token',
    {
      'content-type': 'application/x-www-form-urlencoded',
      ...(authorization ? { authorization } : {}),
      ...headers,
    },
    form,
  );
}

async function setup(app: TestApp): Promise<Fixture> {
  const t = await createTenant(app);
  const connector = (name: string) =>
    createConnector(app, t, { name, allowedProviders: ['openai'], delegation: 'trusted' });
  const apiKey = uniqueSecret('sk');
  await importConnection(app, t, 'alice', 'openai', { type: 'api_key', apiKey });
  return { t, victim: await connector('victim'), other: await connector('other'), apiKey };
}

const db = (app: TestApp) => app.custos.runtime.dataSource;
async function lastAuditId(app: TestApp): Promise<string> {
  const [row] = await db(app).query('SELECT coalesce(max(id), 0)::text AS id FROM audit_events');
  return row.id;
}
interface Row {
  tenant_id: string | null;
  action: string;
  outcome: string;
  actor_type: string;
  actor_id: string | null;
  details: Record<string, any>;
}
/**
 * The rows added since `id`, but for the sealer's own (a chain's signing key is created or replaced, and that
 * audited, when its events are sealed, whenever that happens to fall).
 */
const rowsSince = (app: TestApp, id: string): Promise<Row[]> =>
  db(app).query(
    `SELECT * FROM audit_events WHERE id > $1 AND action NOT LIKE 'audit.signing\\_key.%' ORDER BY id`,
    [id],
  );
const flush = (app: TestApp) => app.custos.app.get(DenialThrottle).flush(true);
/** Writes what earlier tests left folded, then gives the last audit id: the rows after it are this test's. */
async function mark(app: TestApp): Promise<string> {
  await flush(app);
  return lastAuditId(app);
}

/**
 * The i-th of a flood's source addresses: 100 of them, so each stays under its own limit and what is measured is
 * the limit on the client id.
 */
const spread = (flood: number, i: number) => `198.18.${flood}.${(i % 100) + 1}`;

/** How many of each status, in order of first appearance. */
function tally(statuses: number[]): Record<number, number> {
  const out: Record<number, number> = {};
  for (const s of statuses) out[s] = (out[s] ?? 0) + 1;
  return out;
}

function expectSlowDown(res: Answer) {
  expect(res.status).toBe(429);
  expect(res.body).toEqual({ error: 'slow_down', error_description: expect.any(String) });
  expect(res.headers['cache-control']).toBe('no-store');
  const retry = Number(res.headers['retry-after']);
  expect(Number.isInteger(retry)).toBe(true);
  expect(retry).toBeGreaterThanOrEqual(1);
  expect(retry).toBeLessThanOrEqual(3600);
}

/** Individual events, then (after the flush) one folded event whose count makes up the rest. */
function expectFolded(rows: Row[], total: number, folded: Partial<Row>, details: Record<string, unknown>) {
  const counted = rows.filter((r) => r.action.endsWith('folded'));
  const individual = rows.filter((r) => r.outcome === 'denied' && !r.action.endsWith('folded'));
  expect(individual).toHaveLength(AUDITED);
  expect(counted).toHaveLength(1);
  expect(counted[0]).toMatchObject({ outcome: 'denied', ...folded });
  expect(counted[0].details).toMatchObject({ count: total - AUDITED, foldedAfter: AUDITED, ...details });
  const { windowStart, windowEnd } = counted[0].details;
  expect(Date.parse(windowEnd) - Date.parse(windowStart)).toBe(3600_000);
  expect(individual.length + counted[0].details.count).toBe(total);
  return { individual, counted: counted[0] };
}

describe('in one process (no Redis)', () => {
  let app: TestApp;
  let f: Fixture;

  beforeAll(async () => {
    app = await startTestApp(LIMITS);
    f = await setup(app);
  });
  afterAll(async () => {
    await app?.close();
  });

  it('answers 2,000 wrong client secrets with 401 up to the limit, then 429 slow_down, and adds a bounded number of audit rows', async () => {
    const before = await mark(app);
    const statuses: number[] = [];
    let last: Answer | undefined;
    for (let i = 0; i < N; i++) {
      last = await exchange(app, spread(1, i), basic(f.victim.clientId, `wrong-${i}`));
      statuses.push(last.status);
    }
    expect(tally(statuses.slice(0, CLIENT_LIMIT))).toEqual({ 401: CLIENT_LIMIT });
    expect(tally(statuses.slice(CLIENT_LIMIT))).toEqual({ 429: N - CLIENT_LIMIT });
    expectSlowDown(last!);

    // Until the window closes, only the first few denials are in the trail.
    const early = await rowsSince(app, before);
    expect(early).toHaveLength(AUDITED);
    for (const r of early) {
      expect(r).toMatchObject({ tenant_id: f.t.tenantId, action: 'token.exchange', actor_id: f.victim.id });
      expect(r.details).toMatchObject({
        reason: 'bad_secret',
        sourceAddress: expect.stringMatching(/^198\.18\.1\./),
      });
    }
    await flush(app);
    const rows = await rowsSince(app, before);
    expect(rows.length).toBeLessThanOrEqual(AUDITED + 1);
    expectFolded(
      rows,
      N,
      {
        tenant_id: f.t.tenantId,
        action: 'token.exchange.denied_folded',
        actor_type: 'connector',
        actor_id: f.victim.id,
      },
      {
        keyKind: 'client',
        key: f.victim.clientId,
        // Past the limit each attempt is still checked (the connector's own requests must get through), and
        // refused with 429.
        reasons: { bad_secret: N - AUDITED },
      },
    );
  });

  it('leaves other clients alone, and never counts a connector’s own successful requests', async () => {
    const ok = await exchange(app, '203.0.113.11', basic(f.other.clientId, f.other.clientSecret));
    expect(ok.status).toBe(200);
    expect(ok.body.access_token).toBe(f.apiKey);
    // Each of the attacker's addresses has only 20 of its 50 failures: another client there still gets through.
    expect((await exchange(app, spread(1, 0), basic(f.other.clientId, f.other.clientSecret))).status).toBe(
      200,
    );
    // Far more successes than any limit, from one address: none is refused.
    const statuses: number[] = [];
    for (let i = 0; i < 300; i++) {
      statuses.push(
        (await exchange(app, '203.0.113.12', basic(f.other.clientId, f.other.clientSecret))).status,
      );
    }
    expect(tally(statuses)).toEqual({ 200: 300 });
    // Client ids are not secret: failures under the attacked id cannot lock the real connector out. Its own
    // requests still succeed, while a wrong secret under its id stays refused with 429 for the window.
    const real = await exchange(app, '203.0.113.13', basic(f.victim.clientId, f.victim.clientSecret));
    expect(real.status).toBe(200);
    expect(real.body.access_token).toBe(f.apiKey);
    expectSlowDown(await exchange(app, '203.0.113.13', basic(f.victim.clientId, 'still-wrong')));
  });

  it('throttles a flood of unknown client ids by source address, into the platform trail', async () => {
    const before = await mark(app);
    const from = '203.0.113.20';
    const statuses: number[] = [];
    for (let i = 0; i < N; i++) {
      const id = `cus_ci_${randomBytes(12).toString('base64url')}`;
      statuses.push((await exchange(app, from, basic(id, 'x'.repeat(40)))).status);
    }
    expect(tally(statuses.slice(0, ADDRESS_LIMIT))).toEqual({ 401: ADDRESS_LIMIT });
    expect(tally(statuses.slice(ADDRESS_LIMIT))).toEqual({ 429: N - ADDRESS_LIMIT });
    await flush(app);
    const rows = await rowsSince(app, before);
    const { individual } = expectFolded(
      rows,
      N,
      { tenant_id: null, action: 'token.exchange.denied_folded', actor_id: null },
      {
        keyKind: 'address',
        key: from,
        reasons: { unknown_client: ADDRESS_LIMIT - AUDITED, rate_limited: N - ADDRESS_LIMIT },
      },
    );
    for (const r of individual) {
      expect(r).toMatchObject({ tenant_id: null, action: 'token.exchange' });
      expect(r.details).toMatchObject({ reason: 'unknown_client', sourceAddress: from });
    }
    // Another address is not affected.
    expect((await exchange(app, '203.0.113.21', basic(f.other.clientId, f.other.clientSecret))).status).toBe(
      200,
    );
  });

  it('throttles one unknown client id tried from many addresses by the id', async () => {
    const before = await mark(app);
    const ghost = `cus_ci_${randomBytes(12).toString('base64url')}`;
    const statuses: number[] = [];
    for (let i = 1; i <= 100; i++) {
      statuses.push((await exchange(app, `198.51.100.${i}`, basic(ghost, 'x'.repeat(40)))).status);
    }
    expect(tally(statuses.slice(0, CLIENT_LIMIT))).toEqual({ 401: CLIENT_LIMIT });
    expect(tally(statuses.slice(CLIENT_LIMIT))).toEqual({ 429: 100 - CLIENT_LIMIT });
    await flush(app);
    expectFolded(
      await rowsSince(app, before),
      100,
      { tenant_id: null, action: 'token.exchange.denied_folded' },
      { keyKind: 'client', key: ghost },
    );
  });

  it('counts requests refused before client authentication too (no credentials at all)', async () => {
    const from = '203.0.113.25';
    const statuses: number[] = [];
    for (let i = 0; i < ADDRESS_LIMIT + 10; i++) statuses.push((await exchange(app, from)).status);
    expect(tally(statuses)).toEqual({ 401: ADDRESS_LIMIT, 429: 10 });
  });

  it('answers 2,000 wrong admin keys with 401 up to the limit, then 429 rate_limited in the admin shape', async () => {
    const before = await mark(app);
    const from = '203.0.113.30';
    const presented: string[] = [];
    const statuses: number[] = [];
    let last: Answer | undefined;
    for (let i = 0; i < N; i++) {
      const key = `cus_${randomBytes(32).toString('base64url')}`;
      if (i % 200 === 0) presented.push(key);
      last = await call(app, from, 'GET', '/v1/tenants', { authorization: `Bearer ${key}` });
      statuses.push(last.status);
      if (i === 0) expect(last.body.error).toBe('unauthenticated');
    }
    expect(tally(statuses.slice(0, ADDRESS_LIMIT))).toEqual({ 401: ADDRESS_LIMIT });
    expect(tally(statuses.slice(ADDRESS_LIMIT))).toEqual({ 429: N - ADDRESS_LIMIT });
    expect(last!.body).toEqual({
      error: 'rate_limited',
      message: expect.any(String),
      requestId: expect.any(String),
    });
    expect(Number(last!.headers['retry-after'])).toBeGreaterThanOrEqual(1);
    expect(last!.headers['cache-control']).toBe('no-store');

    await flush(app);
    const rows = await rowsSince(app, before);
    const { individual } = expectFolded(
      rows,
      N,
      { tenant_id: null, action: 'access.denied.folded', actor_type: 'admin_key', actor_id: null },
      {
        keyKind: 'address',
        key: from,
        reasons: { invalid_key: ADDRESS_LIMIT - AUDITED, rate_limited: N - ADDRESS_LIMIT },
      },
    );
    for (const r of individual) {
      expect(r).toMatchObject({ action: 'access.denied', tenant_id: null });
      expect(r.details).toMatchObject({ reason: 'invalid_key', sourceAddress: from });
    }
    const trail = JSON.stringify(rows);
    for (const key of presented) expect(trail).not.toContain(key);

    // A valid key elsewhere works; from the throttled address it waits like everyone there.
    expect(
      (await call(app, '203.0.113.31', 'GET', '/v1/tenants', { authorization: `Bearer ${app.bootstrapKey}` }))
        .status,
    ).toBe(200);
    expect(
      (await call(app, from, 'GET', '/v1/tenants', { authorization: `Bearer ${app.bootstrapKey}` })).status,
    ).toBe(429);
  });

  it('throttles one wrong admin key tried from many addresses by its hash, which is all the trail shows', async () => {
    const before = await mark(app);
    const key = `cus_${randomBytes(32).toString('base64url')}`;
    const statuses: number[] = [];
    for (let i = 1; i <= 100; i++) {
      statuses.push(
        (await call(app, `198.51.101.${i}`, 'GET', '/v1/tenants', { authorization: `Bearer ${key}` })).status,
      );
    }
    expect(tally(statuses)).toEqual({ 401: CLIENT_LIMIT, 429: 100 - CLIENT_LIMIT });
    await flush(app);
    const rows = await rowsSince(app, before);
    const { counted } = expectFolded(
      rows,
      100,
      { tenant_id: null, action: 'access.denied.folded' },
      { keyKind: 'admin_key' },
    );
    expect(counted.details.key).toMatch(/^sha256:[0-9a-f]{16}$/);
    expect(JSON.stringify(rows)).not.toContain(key);
  });

  it('limits IPv6 clients by their /64', async () => {
    for (let i = 1; i <= ADDRESS_LIMIT; i++) {
      expect((await exchange(app, `2001:db8:7:7::${i.toString(16)}`)).status).toBe(401);
    }
    expectSlowDown(await exchange(app, '2001:db8:7:7:ffff:ffff:ffff:ffff'));
    expect((await exchange(app, '2001:db8:7:8::1')).status).toBe(401);
  });

  it('ignores X-Forwarded-For unless a proxy is trusted', async () => {
    const from = '203.0.113.40';
    for (let i = 0; i < ADDRESS_LIMIT; i++) {
      await exchange(app, from, undefined, { 'x-forwarded-for': `192.0.2.${i + 1}` });
    }
    expectSlowDown(await exchange(app, from, undefined, { 'x-forwarded-for': '192.0.2.200' }));
  });

  it('counts throttled and folded requests in the metrics', async () => {
    const res = await app.custos.app
      .getHttpAdapter()
      .getInstance()
      .inject({ method: 'GET', url: '/metrics' });
    expect(res.body).toMatch(/custos_auth_throttled_total\{endpoint="token"\} [1-9]/);
    expect(res.body).toMatch(/custos_auth_throttled_total\{endpoint="admin"\} [1-9]/);
    expect(res.body).toMatch(/custos_denials_folded_total\{endpoint="token"\} [1-9]/);
    expect(res.body).toMatch(/custos_token_requests_total\{outcome="throttled"\} [1-9]/);
  });
});

describe('two instances sharing Redis', () => {
  const prefix = `custos-test-rl-${randomUUID()}`;
  let a: TestApp;
  let b: TestApp;
  let f: Fixture;
  let redis: Redis;

  beforeAll(async () => {
    const env = {
      ...LIMITS,
      REDIS_URL: testRedisUrl,
      CUSTOS_QUEUE_PREFIX: prefix,
      CUSTOS_TRUST_PROXY: '10.0.0.0/8',
      // Replicas of one deployment: one keyring.
      CUSTOS_ROOT_KEYS: RootKeyring.generateSpec(),
    };
    redis = new Redis(testRedisUrl);
    a = await startTestApp(env);
    b = await startTestApp(env);
    // The last instance started holds the bootstrap key (each start replaces it); both share the database.
    f = await setup(b);
  });
  afterAll(async () => {
    await a?.close();
    await b?.close();
    const keys = await redis.keys(`${prefix}:*`);
    if (keys.length > 0) await redis.del(...keys);
    await redis.quit();
  });

  it('shares the limit and the audit bound between instances', async () => {
    const before = await mark(a);
    const statuses: number[] = [];
    for (let i = 0; i < N; i++) {
      statuses.push(
        (await exchange(i % 2 === 0 ? a : b, spread(2, i), basic(f.victim.clientId, `wrong-${i}`))).status,
      );
    }
    // An instance learns that the shared count is over the limit at its own next failure: at most one
    // more failure per other instance gets through, and then both refuse.
    const refused = statuses.filter((s) => s === 401).length;
    expect(refused).toBeGreaterThanOrEqual(CLIENT_LIMIT);
    expect(refused).toBeLessThanOrEqual(CLIENT_LIMIT + 1);
    expect(tally(statuses)).toEqual({ 401: refused, 429: N - refused });
    expect(statuses.lastIndexOf(401)).toBeLessThan(statuses.indexOf(429) + 2);
    expectSlowDown(await exchange(a, '203.0.113.51', basic(f.victim.clientId, 'wrong')));
    expectSlowDown(await exchange(b, '203.0.113.51', basic(f.victim.clientId, 'wrong')));

    await flush(a);
    await flush(b);
    const rows = await rowsSince(a, before);
    const individual = rows.filter((r) => r.action === 'token.exchange');
    const counted = rows.filter((r) => r.action === 'token.exchange.denied_folded');
    // Individual events follow the shared count; each instance folds the rest it saw into one event.
    expect(individual).toHaveLength(AUDITED);
    expect(counted.length).toBeGreaterThanOrEqual(1);
    expect(counted.length).toBeLessThanOrEqual(2);
    for (const c of counted) {
      expect(c).toMatchObject({ tenant_id: f.t.tenantId, actor_id: f.victim.id });
      expect(c.details).toMatchObject({ keyKind: 'client', key: f.victim.clientId });
    }
    const folded = counted.reduce((n, c) => n + Number(c.details.count), 0);
    expect(individual.length + folded).toBe(N + 2);

    // Redis holds counters with an expiry, and neither the client id nor the address.
    const stored = await redis.keys(`${prefix}:fail:*`);
    expect(stored.length).toBeGreaterThan(0);
    for (const k of stored) {
      expect(k).not.toContain(f.victim.clientId);
      expect(k).not.toContain('198.18.2.');
      expect(await redis.pttl(k)).toBeGreaterThan(0);
    }
    // Another client is unaffected on either instance.
    expect((await exchange(b, '203.0.113.52', basic(f.other.clientId, f.other.clientSecret))).status).toBe(
      200,
    );
  });

  it('limits the client a trusted proxy names, not the proxy', async () => {
    const proxy = '10.1.2.3';
    const client = { 'x-forwarded-for': '192.0.2.77' };
    for (let i = 0; i < ADDRESS_LIMIT; i++) {
      expect((await exchange(a, proxy, undefined, client)).status).toBe(401);
    }
    expectSlowDown(await exchange(a, proxy, undefined, client));
    // The other instance counts its first failure for that client in Redis, finds it over, and refuses.
    expect([401, 429]).toContain((await exchange(b, proxy, undefined, client)).status);
    expectSlowDown(await exchange(b, proxy, undefined, client));
    // Everyone else behind the same proxy is not held up.
    const ok = await exchange(a, proxy, basic(f.other.clientId, f.other.clientSecret), {
      'x-forwarded-for': '192.0.2.78',
    });
    expect(ok.status).toBe(200);
  });
});

describe('when the limiter’s Redis stops answering', () => {
  let app: TestApp;
  let f: Fixture;
  let proxy: BlackholeProxy;

  beforeAll(async () => {
    proxy = await startBlackholeProxy('127.0.0.1', Number(new URL(testRedisUrl).port || 6379));
    app = await startTestApp({ ...LIMITS, REDIS_URL: `redis://127.0.0.1:${proxy.port}` });
    f = await setup(app);
  });
  afterAll(async () => {
    proxy?.restore();
    // Shut down only once Redis answers again: the refresh queue's stop waits on a reconnect otherwise.
    for (let i = 0; i < 100; i++) {
      const answered = await Promise.race([
        app.custos.runtime.jobs.check().then(
          () => true,
          () => false,
        ),
        new Promise<boolean>((r) => setTimeout(() => r(false), 500)),
      ]);
      if (answered) break;
    }
    await app?.close();
    await proxy?.close();
  });

  it('counts in-process: the same 401s, 429s and audit bound, and never a 5xx', async () => {
    proxy.blackhole();
    const before = await mark(app);
    const statuses: number[] = [];
    for (let i = 0; i < N; i++) {
      statuses.push((await exchange(app, spread(3, i), basic(f.victim.clientId, `wrong-${i}`))).status);
    }
    expect(tally(statuses.slice(0, CLIENT_LIMIT))).toEqual({ 401: CLIENT_LIMIT });
    expect(tally(statuses.slice(CLIENT_LIMIT))).toEqual({ 429: N - CLIENT_LIMIT });
    expect((await exchange(app, '203.0.113.61', basic(f.other.clientId, f.other.clientSecret))).status).toBe(
      200,
    );
    await flush(app);
    expectFolded(
      await rowsSince(app, before),
      N,
      { tenant_id: f.t.tenantId, action: 'token.exchange.denied_folded' },
      { keyKind: 'client', key: f.victim.clientId },
    );
    expect(app.logs.join('')).toContain('rate limiter: Redis did not answer');
  });
});

describe('requests from ever new addresses and client ids', () => {
  const GLOBAL = 50;
  let app: TestApp;

  beforeAll(async () => {
    app = await startTestApp({ ...LIMITS, CUSTOS_AUDIT_DENIALS_GLOBAL_PER_WINDOW: String(GLOBAL) });
  });
  afterAll(async () => {
    await app?.close();
  });

  it('audit at most the global budget one by one, and fold the rest into one counted event', async () => {
    const before = await mark(app);
    const total = 6 * GLOBAL;
    // No key ever reaches its own threshold: every request has a new address and a new client id.
    for (let i = 0; i < total; i++) {
      const id = `cus_ci_${randomBytes(12).toString('base64url')}`;
      const from = `198.18.${10 + Math.floor(i / 250)}.${i % 250}`;
      const res = await exchange(app, from, basic(id, 'x'));
      expect(res.status).toBe(401);
    }
    await flush(app);
    const rows = await rowsSince(app, before);
    const individual = rows.filter((r) => r.action === 'token.exchange');
    const folded = rows.filter((r) => r.action === 'token.exchange.denied_folded');
    expect(individual).toHaveLength(GLOBAL);
    expect(folded).toHaveLength(1);
    expect(folded[0]).toMatchObject({ tenant_id: null, actor_id: null });
    expect(folded[0].details).toMatchObject({
      keyKind: 'global',
      key: '*',
      count: total - GLOBAL,
      reasons: { unknown_client: total - GLOBAL },
    });
  });
});

describe('folded events are written when their window closes', () => {
  let app: TestApp;
  let f: Fixture;

  beforeAll(async () => {
    app = await startTestApp({
      CUSTOS_RATE_LIMIT_WINDOW_SECONDS: '1',
      CUSTOS_RATE_LIMIT_CREDENTIAL_FAILURES: '2',
      CUSTOS_AUDIT_DENIALS_PER_WINDOW: '1',
    });
    f = await setup(app);
  });
  afterAll(async () => {
    await app?.close();
  });

  it('without a shutdown or an explicit flush', async () => {
    const before = await mark(app);
    for (let i = 0; i < 6; i++) await exchange(app, '203.0.113.70', basic(f.victim.clientId, `wrong-${i}`));
    let rows: Row[] = [];
    for (let i = 0; i < 100; i++) {
      rows = await rowsSince(app, before);
      if (rows.some((r) => r.action === 'token.exchange.denied_folded')) break;
      await new Promise((r) => setTimeout(r, 200));
    }
    const counted = rows.filter((r) => r.action === 'token.exchange.denied_folded');
    const individual = rows.filter((r) => r.action === 'token.exchange');
    expect(counted.length).toBeGreaterThanOrEqual(1);
    expect(individual.length + counted.reduce((n, c) => n + Number(c.details.count), 0)).toBe(6);
  });
});

describe('folded events still open at shutdown', () => {
  it('are written when the process stops', async () => {
    const app = await startTestApp({
      ...LIMITS,
      CUSTOS_RATE_LIMIT_CREDENTIAL_FAILURES: '2',
      CUSTOS_AUDIT_DENIALS_PER_WINDOW: '1',
    });
    let closed = false;
    try {
      const f = await setup(app);
      const before = await mark(app);
      for (let i = 0; i < 7; i++) await exchange(app, '203.0.113.80', basic(f.victim.clientId, `wrong-${i}`));
      // The window is an hour long: nothing folded is written yet.
      expect((await rowsSince(app, before)).map((r) => r.action)).toEqual(['token.exchange']);
      await app.close();
      closed = true;
      const db2 = new pg.Client({ connectionString: databaseUrlFor(workerDatabaseName()) });
      await db2.connect();
      try {
        const { rows } = await db2.query<Row>('SELECT * FROM audit_events WHERE id > $1 ORDER BY id', [
          before,
        ]);
        expect(rows.map((r) => r.action)).toEqual(['token.exchange', 'token.exchange.denied_folded']);
        expect(rows[1]).toMatchObject({ tenant_id: f.t.tenantId, actor_id: f.victim.id });
        expect(rows[1].details).toMatchObject({
          keyKind: 'client',
          count: 6,
          // Each attempt under a client id is checked, so each is recorded with its own reason.
          reasons: { bad_secret: 6 },
        });
      } finally {
        await db2.end();
      }
    } finally {
      if (!closed) await app.close();
    }
  });
});
