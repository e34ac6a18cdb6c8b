/**
 * Secret hygiene end to end: canary secrets (a provider's access and refresh tokens, an API key, an OAuth
 * client secret, admin keys and connector secrets Custos issues) go through a full run — import, token
 * exchange with refresh, refusals, consent, revocation at the provider, secret rotation — and then every
 * place a secret must never be is searched for each canary in raw, base64, base64url, hex and URL-encoded form:
 * log lines, error and metadata response bodies, audit rows, every column of every table (ciphertext included,
 * as hex), and every key and value in Redis.
 */
import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { startTestApp, type Reply, type TestApp } from '../support/app.js';
import { testRedisUrl } from '../support/env.js';
import { startOAuthProvider, type TestOAuthProvider } from '../support/oauth-provider.js';
import {
  PUBLIC_URL,
  REDIRECT,
  refreshClient,
  setUpRefreshTenant,
  type RefreshFixture,
} from '../support/refresh-fixture.js';

const CLIENT = refreshClient();
const PREFIX = `custos-canary-${randomBytes(6).toString('hex')}`;

let app: TestApp;
let op: TestOAuthProvider;
let fx: RefreshFixture;
let redis: Redis;

/** Every secret seen in the run, with where it may legitimately appear (the one response that hands it out). */
const canaries = new Map<string, string>();
/** Responses that may not carry any secret. */
const quiet: { what: string; reply: Reply }[] = [];

function canary(label: string, value: string): string {
  if (value.length < 12) throw new Error(`canary ${label} too short to be searched for`);
  canaries.set(label, value);
  return value;
}

/** The forms in which a secret could leak. */
function encodings(value: string): Record<string, string> {
  const bytes = Buffer.from(value, 'utf8');
  return {
    raw: value,
    base64: bytes.toString('base64').replace(/=+$/, ''),
    base64url: bytes.toString('base64url'),
    hex: bytes.toString('hex'),
    urlencoded: encodeURIComponent(value),
  };
}

/** Which canaries (and in which form) occur in `haystack`. */
function leaks(haystack: string): string[] {
  const found: string[] = [];
  const lower = haystack.toLowerCase();
  for (const [label, value] of canaries) {
    for (const [form, encoded] of Object.entries(encodings(value))) {
      const hit = form === 'hex' ? lower.includes(encoded) : haystack.includes(encoded);
      if (hit) found.push(`${label} (${form})`);
    }
  }
  return found;
}

async function call(what: string, method: string, url: string, opts: Parameters<TestApp['request']>[2]) {
  const reply = await app.request(method, url, opts);
  quiet.push({ what, reply });
  return reply;
}

beforeAll(async () => {
  op = await startOAuthProvider({
    clients: [{ ...CLIENT, redirect_uris: [REDIRECT] }],
    accessTokenTtlSeconds: 3600,
    refreshTokenRotation: true,
  });
  app = await startTestApp({
    CUSTOS_PUBLIC_URL: PUBLIC_URL,
    CUSTOS_OUTBOUND_ALLOW_HOSTS: op.hostPort,
    REDIS_URL: testRedisUrl,
    CUSTOS_QUEUE_PREFIX: PREFIX,
  });
  redis = new Redis(testRedisUrl, { lazyConnect: true, maxRetriesPerRequest: 1 });
  await redis.connect();
  fx = await setUpRefreshTenant(app, op, CLIENT);
  canary('provider client secret', CLIENT.client_secret);
  canary('connector secret', fx.connector.clientSecret);
  canary('tenant admin key', fx.t.adminKey);
  canary('auditor key', fx.t.auditorKey);
  canary('bootstrap key', app.bootstrapKey);
  await runEverything();
});

afterAll(async () => {
  const keys = await redis.keys(`${PREFIX}*`);
  if (keys.length > 0) await redis.del(...keys);
  redis.disconnect();
  await app?.close();
  await op?.close();
});

/** The run: every operation that touches a secret, and the refusals around them. */
async function runEverything(): Promise<void> {
  const t = fx.t;
  const base = `/v1/tenants/${t.tenantId}`;

  // A token set from the provider whose scheduled refresh has come due: the exchange refreshes it.
  const first = await fx.connect('alice', 20);
  await app.custos.runtime.dataSource.query(
    "UPDATE connections SET refresh_due_at = now() - interval '1 second' WHERE id = $1",
    [first.connectionId],
  );
  canary('access token', first.access_token);
  canary('refresh token', first.refresh_token);
  const released = await fx.exchange('alice');
  expect(released.status).toBe(200);
  canary('refreshed access token', released.body.access_token as string);
  expect(released.body.access_token).not.toBe(first.access_token);
  // Served again from the store.
  expect((await fx.exchange('alice')).status).toBe(200);

  // An API key, imported, then exchanged.
  const apiKey = canary('api key', `sk-canary-${randomBytes(16).toString('hex')}`);
  await call('api key import', 'PUT', `${base}/users/bob/connections/openai`, {
    key: t.adminKey,
    body: { type: 'api_key', apiKey },
  });
  const res = await app.request('PUT', `${base}/providers/inhouse`, { key: t.adminKey });
  quiet.push({ what: 'bad provider put', reply: res });

  // Refusals: unknown user (consent_required), wrong secret, unknown provider, malformed requests.
  quiet.push({ what: 'consent required', reply: await fx.exchange('carol') });
  quiet.push({ what: 'unknown audience', reply: await fx.exchange('alice', app, 'nope') });
  const wrongSecret = await app.request('POST', '/oauth/token', {
    payload: 'grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange&subject_token=alice',
    headers: {
      'content-type': 'application/x-www-form-urlencoded',
      authorization: 'Basic ' + Buffer.from(`${fx.connector.clientId}:not-the-secret`).toString('base64'),
    },
  });
  expect(wrongSecret.status).toBe(401);
  quiet.push({ what: 'wrong client secret', reply: wrongSecret });
  await call('wrong admin key', 'GET', `${base}/connectors`, { key: `${t.adminKey}x` });
  await call('connections listed', 'GET', `${base}/users/alice/connections`, { key: t.adminKey });
  await call('connections listed (bob)', 'GET', `${base}/users/bob/connections`, { key: t.adminKey });
  await call('audit read', 'GET', `${base}/audit/events?limit=200`, { key: t.auditorKey });
  await call('provider app read', 'GET', `${base}/providers/inhouse/app`, { key: t.adminKey });
  await call('connectors listed', 'GET', `${base}/connectors`, { key: t.adminKey });
  await call('tenant read', 'GET', base, { key: t.adminKey });

  // Issued secrets: shown once in their own response, nowhere else.
  const key = await app.request('POST', `${base}/admin-keys`, {
    key: t.adminKey,
    body: { name: 'canary', role: 'auditor' },
  });
  expect(key.status).toBe(201);
  canary('issued admin key', key.body.key as string);
  const connectors = await app.request('GET', `${base}/connectors`, { key: t.adminKey });
  const connectorId = (connectors.body.items as { id: string; clientId: string }[]).find(
    (c) => c.clientId === fx.connector.clientId,
  )!.id;
  const rotated = await app.request('POST', `${base}/connectors/${connectorId}/secret`, { key: t.adminKey });
  expect(rotated.status).toBe(200);
  canary('rotated connector secret', rotated.body.clientSecret as string);
  // The old secret no longer works, and says nothing about the new one.
  quiet.push({ what: 'exchange with the old secret', reply: await fx.exchange('alice') });

  // Disconnect: the refresh token is revoked at the provider by a background job.
  const listed = await app.request('GET', `${base}/users/alice/connections`, { key: t.adminKey });
  const connectionId = (listed.body.items as { id: string }[])[0].id;
  await call('disconnect', 'DELETE', `${base}/connections/${connectionId}`, { key: t.adminKey });
  await call('connections after disconnect', 'GET', `${base}/users/alice/connections?includeRevoked=true`, {
    key: t.adminKey,
  });
}

describe('a canary secret traced through a full run', () => {
  it('ran the operations it claims to (the search below is not vacuous)', () => {
    expect(canaries.size).toBeGreaterThanOrEqual(11);
    expect(quiet.length).toBeGreaterThanOrEqual(15);
    expect(app.logs.length).toBeGreaterThan(20);
    // The search finds each form it claims to look for.
    const apiKey = canaries.get('api key')!;
    for (const [form, encoded] of Object.entries(encodings(apiKey))) {
      expect(leaks(`…${encoded}…`)).toContain(`api key (${form})`);
    }
  });

  it('never appears in a log line', () => {
    const found = app.logs.flatMap((line) => leaks(line).map((l) => `${l}: ${line.slice(0, 200)}`));
    expect(found).toEqual([]);
  });

  it('never appears in an error or metadata response', () => {
    const found = quiet.flatMap(({ what, reply }) =>
      leaks(JSON.stringify(reply.headers) + reply.raw).map((l) => `${what}: ${l}`),
    );
    expect(found).toEqual([]);
  });

  it('never appears in an audit event', async () => {
    const rows: unknown[] = await app.custos.runtime.dataSource.query('SELECT * FROM audit_events');
    expect(rows.length).toBeGreaterThan(10);
    expect(leaks(JSON.stringify(rows))).toEqual([]);
  });

  it('never appears in any column of any table, ciphertext included', async () => {
    const db = app.custos.runtime.dataSource;
    const tables: { table_name: string }[] = await db.query(
      `SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' AND table_type = 'BASE TABLE'`,
    );
    expect(tables.length).toBeGreaterThan(10);
    const found: string[] = [];
    for (const { table_name } of tables) {
      // row_to_json renders bytea as hex, which the hex form of each canary is searched in.
      const rows: { j: string }[] = await db.query(`SELECT row_to_json(x)::text AS j FROM "${table_name}" x`);
      for (const { j } of rows) found.push(...leaks(j).map((l) => `${table_name}: ${l}`));
    }
    expect(found).toEqual([]);
  });

  it('never appears in a Redis key or value', async () => {
    const keys = await redis.keys(`${PREFIX}*`);
    expect(keys.length).toBeGreaterThan(0);
    const found: string[] = [];
    for (const key of keys) {
      const type = await redis.type(key);
      let dump = key;
      if (type === 'string') dump += (await redis.getBuffer(key))?.toString('latin1') ?? '';
      else if (type === 'hash') dump += JSON.stringify(await redis.hgetall(key));
      else if (type === 'list') dump += JSON.stringify(await redis.lrange(key, 0, -1));
      else if (type === 'set') dump += JSON.stringify(await redis.smembers(key));
      else if (type === 'zset') dump += JSON.stringify(await redis.zrange(key, 0, -1));
      else if (type === 'stream') dump += JSON.stringify(await redis.xrange(key, '-', '+'));
      found.push(...leaks(dump).map((l) => `${key}: ${l}`));
    }
    expect(found).toEqual([]);
  });
});
