/**
 * The hosted connect pages answer every failure with a page, never the admin API's JSON: the database gone
 * (503 with Retry-After), an unexpected error (500 with the request id to quote), and what the edge refuses
 * before any handler runs (a NUL in a query or path value, a path that is not UTF-8, an unknown page, a body
 * too large, a malformed or unsupported form body). PostgreSQL is reached through a TCP proxy that the test
 * cuts; a tenant's key is disabled at the KMS emulator (through the real AWS SDK).
 */
import { randomBytes } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { DisableKeyCommand, EnableKeyCommand, KMSClient } from '@aws-sdk/client-kms';
import { startKmsEmulator, type KmsEmulator } from '../../emulators/kms-emulator.js';
import { adminDatabaseUrl, databaseUrlFor, workerDatabaseName } from '../../support/env.js';
import { startTestApp, type Reply, type TestApp } from '../../support/app.js';
import { createTenant, type TenantFixture } from '../../support/factories.js';
import { startTcpProxy, type TcpProxy } from '../../support/tcp-proxy.js';
import { cookieJar, localPath } from '../../support/browser.js';
import { randomAwsCredentials } from '../../support/aws.js';

const PUBLIC_URL = 'https://custos.example.test';
/** Generous: the point is that the page comes, not how fast. */
const RECOVERS_WITHIN_MS = 60_000;

let proxy: TcpProxy;
let app: TestApp;
let t: TenantFixture;
/** A loopback host that stands in for a provider's authorization server (never contacted here). */
let authHost: string;
let authServer: http.Server;
let kms: KmsEmulator;
const awsCreds = randomAwsCredentials();

process.env.AWS_EC2_METADATA_DISABLED = 'true';

async function newSession(provider: string, tenant: TenantFixture = t): Promise<string> {
  const res = await app.request('POST', `/v1/tenants/${tenant.tenantId}/connect/sessions`, {
    key: tenant.adminKey,
    body: { userId: 'alice', provider },
  });
  expect(res.status).toBe(201);
  return local(res.body.url as string);
}

/** A hosted page in the locked-down form every hosted page has, and no JSON anywhere. */
function expectPage(res: Reply, status: number, text: RegExp): void {
  expect(res.status).toBe(status);
  expect(String(res.headers['content-type'])).toMatch(/^text\/html; charset=utf-8/);
  expect(res.headers['cache-control']).toBe('no-store');
  expect(String(res.headers['content-security-policy'])).toMatch(/default-src 'none'/);
  expect(String(res.headers['content-security-policy'])).toMatch(/frame-ancestors 'none'/);
  expect(res.headers['x-frame-options']).toBe('DENY');
  expect(res.raw.startsWith('<!doctype html>')).toBe(true);
  expect(res.raw).not.toMatch(/"error"\s*:/);
  expect(res.raw).not.toMatch(/<script/i);
  expect(res.raw).toMatch(text);
}

async function eventually(what: string, check: () => Promise<boolean>): Promise<void> {
  const until = Date.now() + RECOVERS_WITHIN_MS;
  while (Date.now() < until) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error(`${what} did not recover`);
}

const local = (url: string) => localPath(url);

beforeAll(async () => {
  const u = new URL(adminDatabaseUrl);
  proxy = await startTcpProxy(u.hostname, Number(u.port || 5432));
  const viaProxy = new URL(databaseUrlFor(workerDatabaseName()));
  viaProxy.port = String(proxy.port);
  authServer = http.createServer((_req, res) => res.writeHead(404).end());
  await new Promise<void>((r) => authServer.listen(0, '127.0.0.1', r));
  authHost = `127.0.0.1:${(authServer.address() as AddressInfo).port}`;
  kms = await startKmsEmulator({ credentials: [awsCreds] });
  app = await startTestApp({
    DATABASE_URL: viaProxy.toString(),
    CUSTOS_PUBLIC_URL: PUBLIC_URL,
    CUSTOS_OUTBOUND_ALLOW_HOSTS: `${authHost},127.0.0.1:${kms.port}`,
    CUSTOS_DB_CONNECT_TIMEOUT_MS: '2000',
    CUSTOS_DB_STATEMENT_TIMEOUT_MS: '4000',
  });
  t = await createTenant(app);
  const put = async (url: string, body: unknown) => {
    const res = await app.request('PUT', url, { key: t.adminKey, body });
    expect([200, 201]).toContain(res.status);
  };
  await put(`/v1/tenants/${t.tenantId}/providers/pages-keys`, {
    key: 'pages-keys',
    name: 'Pages API',
    authMode: 'api_key',
  });
  await put(`/v1/tenants/${t.tenantId}/providers/pages-oauth`, {
    key: 'pages-oauth',
    name: 'Pages OAuth',
    authMode: 'oauth2',
    oauth2: {
      authorizationUrl: `http://${authHost}/authorize`,
      tokenUrl: `http://${authHost}/token`,
      scopes: ['repo'],
    },
  });
  await put(`/v1/tenants/${t.tenantId}/providers/pages-oauth/app`, {
    clientId: 'pages-client',
    clientSecret: 'pages-secret',
  });
});

afterAll(async () => {
  proxy?.restore();
  await app?.close();
  await proxy?.close();
  await new Promise((r) => authServer?.close(r));
  await kms?.close();
});

describe('hosted pages when the edge refuses a request', () => {
  it('answers a NUL in a callback query value with a 400 page', async () => {
    const res = await app.request('GET', '/connect/callback/pages-oauth?state=abc%00def&code=x');
    expectPage(res, 400, /Start again from your link/);
  });

  it('answers a NUL in a link with a 400 page', async () => {
    expectPage(await app.request('GET', '/connect/cst_abc%00def'), 400, /Start again from your link/);
  });

  it('answers a path that is not valid UTF-8 with a 400 page', async () => {
    expectPage(await app.request('GET', '/connect/%ff%fe'), 400, /Start again from your link/);
  });

  it('answers an unknown hosted address with a 404 page', async () => {
    expectPage(await app.request('GET', '/connect/a/b/c/d'), 404, /does not exist/);
  });

  it('answers a body too large, a malformed and an unsupported form body with pages', async () => {
    const link = await newSession('pages-keys');
    const big = await app.request('POST', `${link}/api-key`, {
      payload: `csrf=x&apiKey=${'a'.repeat(70_000)}`,
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
    });
    expectPage(big, 413, /too much data/i);
    const malformed = await app.request('POST', `${link}/start`, {
      payload: '{"csrf":',
      headers: { 'content-type': 'application/json' },
    });
    expectPage(malformed, 400, /Start again from your link/);
    const unsupported = await app.request('POST', `${link}/start`, {
      payload: 'csrf=x',
      headers: { 'content-type': 'application/xml' },
    });
    expectPage(unsupported, 415, /Start again from your link/);
  });
});

describe('hosted pages when something breaks inside', () => {
  it('answers an unexpected error with a 500 page that shows the request id, and logs it', async () => {
    const link = await newSession('pages-oauth');
    const jar = cookieJar();
    const page = await app.request('GET', link);
    jar.take(page.headers['set-cookie']);
    const csrf = /name="csrf" value="([^"]+)"/.exec(page.raw)![1];
    const start = await app.request('POST', `${link}/start`, {
      payload: `csrf=${csrf}`,
      headers: { 'content-type': 'application/x-www-form-urlencoded', cookie: jar.header() },
    });
    expect(start.status).toBe(303);
    jar.take(start.headers['set-cookie']);
    const state = new URL(String(start.headers.location)).searchParams.get('state')!;
    // The sealed flow secrets no longer open (a flipped byte): nothing a user did, nothing to retry.
    await app.custos.runtime.dataSource.query(
      `UPDATE connect_sessions
          SET flow_secrets = set_byte(flow_secrets, length(flow_secrets) - 1,
                                      get_byte(flow_secrets, length(flow_secrets) - 1) # 1)
        WHERE state_hash = sha256(convert_to($1, 'UTF8'))`,
      [state],
    );
    const res = await app.request(
      'GET',
      `/connect/callback/pages-oauth?code=abc&state=${encodeURIComponent(state)}`,
      { headers: { cookie: jar.header(), 'x-request-id': 'req-pages-500-check' } },
    );
    expectPage(res, 500, /Something went wrong/);
    expect(res.headers['x-request-id']).toBe('req-pages-500-check');
    expect(res.raw).toContain('req-pages-500-check');
    expect(res.headers['retry-after']).toBeUndefined();
    expect(app.logs.some((l) => l.includes('req-pages-500-check') && l.includes('request failed'))).toBe(
      true,
    );
  });
});

describe('hosted pages while the tenant’s key backend refuses', () => {
  it('answers 503 pages with Retry-After, then the pages come back with the key', async () => {
    const byok = await createTenant(app);
    const key = kms.createKey({ alias: `alias/pages-${randomBytes(4).toString('hex')}` });
    const kmsAdmin = new KMSClient({
      region: 'us-east-1',
      endpoint: kms.url,
      credentials: { ...awsCreds },
      maxAttempts: 1,
    });
    const backend = await app.request('PUT', `/v1/tenants/${byok.tenantId}/key-backend`, {
      key: byok.adminKey,
      body: {
        type: 'aws-kms',
        keyId: key.arn,
        region: 'us-east-1',
        endpoint: kms.url,
        credentials: { ...awsCreds },
      },
    });
    expect(backend.status).toBe(200);
    for (const [url, body] of [
      [
        `/v1/tenants/${byok.tenantId}/providers/pages-oauth`,
        {
          key: 'pages-oauth',
          name: 'Pages OAuth',
          authMode: 'oauth2',
          oauth2: {
            authorizationUrl: `http://${authHost}/authorize`,
            tokenUrl: `http://${authHost}/token`,
          },
        },
      ],
      [
        `/v1/tenants/${byok.tenantId}/providers/pages-oauth/app`,
        { clientId: 'pages-client', clientSecret: 'pages-secret' },
      ],
    ] as const) {
      const res = await app.request('PUT', url, { key: byok.adminKey, body });
      expect([200, 201]).toContain(res.status);
    }
    const link = await newSession('pages-oauth', byok);
    const press = async () => {
      const jar = cookieJar();
      const page = await app.request('GET', link);
      jar.take(page.headers['set-cookie']);
      const csrf = /name="csrf" value="([^"]+)"/.exec(page.raw)![1];
      return app.request('POST', `${link}/start`, {
        payload: `csrf=${csrf}`,
        headers: { 'content-type': 'application/x-www-form-urlencoded', cookie: jar.header() },
      });
    };

    await kmsAdmin.send(new DisableKeyCommand({ KeyId: key.keyId }));
    try {
      await app.request('POST', `/v1/tenants/${byok.tenantId}/key-backend/flush`, { key: byok.adminKey });
      // The tenant app's client secret cannot be opened.
      const refused = await press();
      expectPage(refused, 503, /try again in a few minutes/i);
      expect(Number(refused.headers['retry-after'])).toBeGreaterThan(0);
    } finally {
      await kmsAdmin.send(new EnableKeyCommand({ KeyId: key.keyId }));
    }
    await eventually('the connect step', async () => (await press()).status === 303);
  }, 60_000);
});

describe('hosted pages while the database is unreachable', () => {
  it('answers 503 pages with Retry-After, then the pages come back with the database', async () => {
    const keysLink = await newSession('pages-keys');
    const oauthLink = await newSession('pages-oauth');
    expect((await app.request('GET', keysLink)).status).toBe(200);

    proxy.cut();
    try {
      const page = await app.request('GET', keysLink);
      expectPage(page, 503, /try again in a few minutes/i);
      expect(Number(page.headers['retry-after'])).toBeGreaterThan(0);
      const start = await app.request('POST', `${oauthLink}/start`, {
        payload: 'csrf=x',
        headers: { 'content-type': 'application/x-www-form-urlencoded', cookie: '__Host-custos_csrf=x' },
      });
      expectPage(start, 503, /try again in a few minutes/i);
      expect(Number(start.headers['retry-after'])).toBeGreaterThan(0);
      const callback = await app.request('GET', '/connect/callback/pages-oauth?code=abc&state=some-state');
      expectPage(callback, 503, /try again in a few minutes/i);
    } finally {
      proxy.restore();
    }
    await eventually('the hosted page', async () => (await app.request('GET', keysLink)).status === 200);
  }, 120_000);
});
