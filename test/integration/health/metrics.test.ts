/**
 * /metrics as an operator reads it: HTTP requests by route template (never a URL, so never a tenant or user id),
 * the database pool, data-key cache and key-backend calls, refresh lag and the refresh queue's depth; a scrape
 * answers at once while Redis hangs or is gone. The Grafana dashboard asks only for metrics that exist.
 */
import { randomUUID } from 'node:crypto';
import { once } from 'node:events';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { startTestApp, type TestApp } from '../../support/app.js';
import { startOAuthProvider, type TestOAuthProvider } from '../../support/oauth-provider.js';
import { startPrivateRedis, type PrivateRedis } from '../../support/processes.js';
import {
  PUBLIC_URL,
  REDIRECT,
  refreshClient,
  setUpRefreshTenant,
  type RefreshFixture,
} from '../../support/refresh-fixture.js';

jest.setTimeout(60_000);

const DASHBOARD = path.join(__dirname, '../../../helm/custos/dashboards/custos.json');
const CLIENT = refreshClient();

let redis: PrivateRedis;
let op: TestOAuthProvider;
let app: TestApp;
let fx: RefreshFixture;

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** The samples of a Prometheus text exposition (label values here hold no escaped quotes). */
function samples(raw: string): Sample[] {
  const out: Sample[] = [];
  for (const line of raw.split('\n')) {
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m) continue;
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="([^"]*)"/g)) labels[l[1]] = l[2];
    out.push({ name: m[1], labels, value: Number(m[3]) });
  }
  return out;
}

async function scrape(): Promise<{ raw: string; samples: Sample[] }> {
  const res = await app.request('GET', '/metrics');
  expect(res.status).toBe(200);
  return { raw: res.raw, samples: samples(res.raw) };
}

/** The one sample of `name` whose labels include `labels`; undefined when there is none. */
function find(all: Sample[], name: string, labels: Record<string, string> = {}): Sample | undefined {
  const found = all.filter(
    (s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v),
  );
  expect(found.length).toBeLessThanOrEqual(1);
  return found[0];
}

/** Fails naming `what` when `p` has not settled within `ms` (a scrape held up by Redis, not a slow run). */
async function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      p,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`${what} did not answer within ${ms} ms`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

beforeAll(async () => {
  redis = await startPrivateRedis();
  op = await startOAuthProvider({
    clients: [{ ...CLIENT, redirect_uris: [REDIRECT] }],
    accessTokenTtlSeconds: 3600,
    refreshTokenRotation: true,
  });
  app = await startTestApp({
    REDIS_URL: redis.url,
    // The api role queues refreshes in Redis but runs none: an expired token is refreshed by the exchange that
    // finds it (a known trigger for the lag), and no worker is left blocking on a Redis that is gone.
    CUSTOS_ROLE: 'api',
    CUSTOS_PUBLIC_URL: PUBLIC_URL,
    CUSTOS_OUTBOUND_ALLOW_HOSTS: op.hostPort,
  });
  fx = await setUpRefreshTenant(app, op, CLIENT);
});

/** Stops the private Redis once (a second stop would wait for an exit that already happened). */
let stopRedis = async () => {
  await redis?.stop();
  stopRedis = async () => undefined;
};

afterAll(async () => {
  await app?.close();
  await stopRedis();
  await op?.close();
});

describe('custos_http_request_duration_seconds', () => {
  it('labels a request with the route template it matched and its status, and every unmatched URL alike', async () => {
    const missing = randomUUID();
    expect((await app.request('GET', `/v1/tenants/${missing}`, { key: app.bootstrapKey })).status).toBe(404);
    expect((await app.request('GET', `/no/such/${missing}`)).status).toBe(404);

    const { raw, samples: all } = await scrape();
    const count = (labels: Record<string, string>) =>
      find(all, 'custos_http_request_duration_seconds_count', labels)?.value ?? 0;
    expect(
      count({ route: '/v1/tenants/:tenantId', method: 'GET', status_code: '404' }),
    ).toBeGreaterThanOrEqual(1);
    expect(count({ route: 'unmatched', method: 'GET', status_code: '404' })).toBeGreaterThanOrEqual(1);
    expect(raw).not.toContain(missing);
    // Every request the fixture made is there too, by template.
    expect(count({ route: '/v1/tenants/:tenantId/connectors', method: 'POST', status_code: '201' })).toBe(1);
  });

  it('keeps probes under their own routes, and counts the scrape itself in flight', async () => {
    expect((await app.request('GET', '/healthz')).status).toBe(200);
    const { samples: all } = await scrape();
    expect(
      find(all, 'custos_http_request_duration_seconds_count', { route: '/healthz', status_code: '200' })
        ?.value,
    ).toBeGreaterThanOrEqual(1);
    expect(
      find(all, 'custos_http_request_duration_seconds_count', { route: '/metrics', status_code: '200' })
        ?.value,
    ).toBeGreaterThanOrEqual(1);
    expect(find(all, 'custos_http_requests_in_flight')?.value).toBe(1);
  });

  it('counts a request whose client went away before its answer as 499, and no longer in flight', async () => {
    const fastify = app.custos.app.getHttpAdapter().getInstance();
    await fastify.listen({ port: 0, host: '127.0.0.1' });
    const { port } = fastify.server.address() as net.AddressInfo;
    const inFlight = async () => find((await scrape()).samples, 'custos_http_requests_in_flight')?.value;
    const aborted = async () =>
      find((await scrape()).samples, 'custos_http_request_duration_seconds_count', {
        route: '/oauth/token',
        status_code: '499',
      })?.value ?? 0;
    const until = async (what: string, cond: () => Promise<boolean>) => {
      for (const end = Date.now() + 5000; !(await cond());) {
        if (Date.now() > end) throw new Error(`${what}: not within 5 s`);
        await new Promise((r) => setTimeout(r, 20));
      }
    };

    // Half a request body, and the client gives up waiting.
    const socket = net.connect(port, '127.0.0.1');
    await once(socket, 'connect');
    socket.write(
      'POST /oauth/token HTTP/1.1\r\nhost: custos\r\ncontent-type: application/x-www-form-urlencoded\r\n' +
        'content-length: 100\r\n\r\ngrant_type=',
    );
    // This scrape, and the request waiting for the rest of its body.
    await until('the request in flight', async () => (await inFlight()) === 2);
    socket.destroy();
    await until('the request counted as aborted', async () => (await aborted()) === 1);
    expect(await inFlight()).toBe(1);
  });
});

it('carries no tenant, user or connection id in any label, after exchanges, refreshes and admin calls', async () => {
  const user = `user-${randomUUID()}`;
  const late = `late-${randomUUID()}`;
  const fresh = await fx.connect(user, 3600);
  // Expired: the exchange refreshes it on the request path.
  const expired = await fx.connect(late, -5);
  expect((await fx.exchange(user)).status).toBe(200);
  expect((await fx.exchange(late)).status).toBe(200);
  const nobody = `nobody-${randomUUID()}`;
  expect((await fx.exchange(nobody)).status).toBeGreaterThanOrEqual(400);
  const listed = await app.request(
    'GET',
    `/v1/tenants/${fx.t.tenantId}/users/${encodeURIComponent(user)}/connections`,
    { key: fx.t.adminKey },
  );
  expect(listed.status).toBe(200);

  const { raw, samples: all } = await scrape();
  const values = new Set(all.flatMap((s) => Object.values(s.labels)));
  for (const id of [
    fx.t.tenantId,
    user,
    late,
    nobody,
    fresh.connectionId,
    expired.connectionId,
    fx.connector.clientId,
  ]) {
    expect([...values].filter((v) => v.includes(id))).toEqual([]);
    expect(raw).not.toContain(id);
  }
  expect(
    find(all, 'custos_http_request_duration_seconds_count', {
      route: '/v1/tenants/:tenantId/users/:userId/connections',
      method: 'GET',
      status_code: '200',
    })?.value,
  ).toBe(1);
  expect(
    find(all, 'custos_http_request_duration_seconds_count', { route: '/oauth/token', status_code: '200' })
      ?.value,
  ).toBeGreaterThanOrEqual(2);
  // The expired token was refreshed by the exchange that found it due.
  expect(find(all, 'custos_token_refresh_lag_seconds_count', { trigger: 'read' })?.value).toBe(1);
  // Each exchange opened its token with a cached data key; the data key itself came from the managed keyring.
  expect(find(all, 'custos_data_key_cache_lookups_total', { result: 'hit' })?.value).toBeGreaterThanOrEqual(
    2,
  );
  expect(
    find(all, 'custos_key_backend_call_duration_seconds_count', {
      backend: 'managed',
      operation: 'generate',
      result: 'ok',
    })?.value,
  ).toBeGreaterThanOrEqual(1);
});

it('reports the database pool: open, idle and waiting clients, and its size', async () => {
  const { samples: all } = await scrape();
  const value = (name: string) => find(all, name)?.value;
  // startTestApp sets CUSTOS_DB_POOL_SIZE=5.
  expect(value('custos_db_pool_max_clients')).toBe(5);
  expect(value('custos_db_pool_clients')).toBeGreaterThanOrEqual(1);
  expect(value('custos_db_pool_clients')).toBeLessThanOrEqual(5);
  expect(value('custos_db_pool_idle_clients')).toBeLessThanOrEqual(value('custos_db_pool_clients')!);
  expect(value('custos_db_pool_waiting_requests')).toBe(0);
});

it('reports the refresh queue by state while Redis answers', async () => {
  const { samples: all } = await scrape();
  const states = all.filter((s) => s.name === 'custos_refresh_queue_depth').map((s) => s.labels.state);
  expect(states.sort()).toEqual(['active', 'delayed', 'waiting']);
  // The refreshed connection's next refresh, at least, waits for its due time.
  expect(find(all, 'custos_refresh_queue_depth', { state: 'delayed' })?.value).toBeGreaterThanOrEqual(1);
});

describe('the Grafana dashboard', () => {
  const dashboard = JSON.parse(fs.readFileSync(DASHBOARD, 'utf8')) as {
    __inputs: { name: string; pluginId: string }[];
    panels: { type: string; datasource?: { uid: string }; targets?: { expr: string }[] }[];
    templating: { list: { query: { query: string } }[] };
  };

  it('takes its Prometheus data source as an input, in every panel', () => {
    expect(dashboard.__inputs).toEqual([
      expect.objectContaining({ name: 'DS_PROMETHEUS', pluginId: 'prometheus' }),
    ]);
    for (const p of dashboard.panels.filter((x) => x.type !== 'row')) {
      expect(p.datasource?.uid).toBe('${DS_PROMETHEUS}');
    }
  });

  it('asks only for metrics that a scrape of Custos has', async () => {
    const exprs = dashboard.panels.flatMap((p) => p.targets ?? []).map((t) => t.expr);
    expect(exprs.length).toBeGreaterThan(15);
    exprs.push(...dashboard.templating.list.map((v) => v.query.query));
    // Every series the dashboard reads is Custos's own (process metrics have the prefix too).
    const selected = exprs.flatMap((e) => [...e.matchAll(/([a-zA-Z_:][a-zA-Z0-9_:]*)\{/g)].map((m) => m[1]));
    expect(selected.filter((n) => !n.startsWith('custos_'))).toEqual([]);
    const names = new Set(exprs.flatMap((e) => [...e.matchAll(/\bcustos_[a-zA-Z0-9_:]*/g)].map((m) => m[0])));
    const { raw } = await scrape();
    const families = new Map(
      [...raw.matchAll(/^# TYPE (\S+) (\S+)$/gm)].map((m) => [m[1], m[2]] as [string, string]),
    );
    const unknown = [...names].filter((n) => {
      if (families.has(n)) return false;
      const base = /^(.*)_(bucket|sum|count)$/.exec(n)?.[1];
      return !(base && families.get(base) === 'histogram');
    });
    expect(unknown).toEqual([]);
  });
});

it('answers a scrape at once, without the queue depth, while Redis hangs and once it is gone', async () => {
  // Every command waits (the connection stays up): the count must not hold up the scrape.
  await redis.client.call('CLIENT', 'PAUSE', '10000', 'ALL');
  for (let i = 0; i < 2; i++) {
    const { raw, samples: all } = await within(scrape(), 1500, 'a scrape while Redis hangs');
    expect(all.some((s) => s.name === 'custos_refresh_queue_depth')).toBe(false);
    expect(raw).toContain('custos_db_pool_clients ');
  }
  await stopRedis();
  const { samples: all } = await within(scrape(), 1500, 'a scrape with Redis gone');
  expect(all.some((s) => s.name === 'custos_refresh_queue_depth')).toBe(false);
  expect(find(all, 'custos_http_requests_in_flight')?.value).toBe(1);
});
