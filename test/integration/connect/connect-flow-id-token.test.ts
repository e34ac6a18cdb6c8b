/**
 * The provider's ID token in the hosted connect flow: its `sub` becomes the connection's provider account id
 * only after the token is verified against the provider's `jwksUri` (signature, asymmetric algorithm, iss,
 * aud, exp, the flow's nonce). oidc-provider on loopback is the provider; a small proxy in front of its token
 * endpoint (the test's fault injection) swaps the ID token in the response for a tampered, re-signed,
 * unsigned, HMAC-forged one, or a genuine one issued to another client or by another issuer. Whatever is
 * refused ends with a page and an audited failure, and nothing is stored.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { generateKeyPairSync } from 'node:crypto';
import { base64url, decodeJwt, importJWK, SignJWT, type JWK } from 'jose';
import { startTestApp, type TestApp } from '../../support/app.js';
import { createTenant, type TenantFixture } from '../../support/factories.js';
import { startOAuthProvider, type TestOAuthProvider } from '../../support/oauth-provider.js';
import { cookieJar, localPath, readBody } from '../../support/browser.js';

const PUBLIC_URL = 'https://custos.example.test';
const CLIENT = { client_id: 'custos-idt', client_secret: 'idt-secret-' + Date.now() };
const OTHER = { client_id: 'other-app', client_secret: 'other-secret-' + Date.now() };
const OTHER_REDIRECT = 'https://other.example/cb';

let app: TestApp;
/** The provider. */
let op: TestOAuthProvider;
/** Another provider, with its own issuer and keys, where the same client id is registered. */
let elsewhere: TestOAuthProvider;
let t: TenantFixture;
/** In front of op's token endpoint and JWK Set; `rewrite` replaces the ID token of the next responses. */
let proxy: http.Server;
let proxyHost: string;
let rewrite: ((idToken: string) => Promise<string | undefined>) | null = null;
let jwksRequests = 0;
/** An allow-listed port where nothing listens: a JWK Set that cannot be fetched. */
let deadHost: string;

async function putProvider(key: string, oauth2: Record<string, unknown>) {
  const res = await app.request('PUT', `/v1/tenants/${t.tenantId}/providers/${key}`, {
    key: t.adminKey,
    body: {
      key,
      name: `ID ${key}`,
      authMode: 'oauth2',
      oauth2: {
        authorizationUrl: op.endpoints.authorization,
        tokenUrl: `http://${proxyHost}/token`,
        issuer: op.issuer,
        scopes: ['openid', 'repo'],
        tokenEndpointAuthMethod: 'client_secret_basic',
        ...oauth2,
      },
    },
  });
  expect([200, 201]).toContain(res.status);
  const appRes = await app.request('PUT', `/v1/tenants/${t.tenantId}/providers/${key}/app`, {
    key: t.adminKey,
    body: { clientId: CLIENT.client_id, clientSecret: CLIENT.client_secret },
  });
  expect(appRes.status).toBe(201);
}

/**
 * Opens a link for `userId`, presses the button, and lets alice sign in and consent at the provider. The
 * flow's nonce goes to `onNonce` before the provider redirects back, so a rewrite can use it.
 */
async function connect(userId: string, provider = 'idt', onNonce?: (nonce: string) => void) {
  const created = await app.request('POST', `/v1/tenants/${t.tenantId}/connect/sessions`, {
    key: t.adminKey,
    body: { userId, provider },
  });
  expect(created.status).toBe(201);
  const link = local(created.body.url as string);
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
  const authorizationUrl = String(start.headers.location);
  onNonce?.(new URL(authorizationUrl).searchParams.get('nonce')!);
  const { redirectedTo } = await op.authorize(authorizationUrl, { account: 'alice' });
  const done = await app.request('GET', local(redirectedTo), { headers: { cookie: jar.header() } });
  return { done, sessionId: created.body.id as string };
}

/** An ID token genuinely issued by `issuerOp` to `client`, carrying `nonce`: from its own code flow. */
async function genuineIdToken(
  issuerOp: TestOAuthProvider,
  client: { client_id: string; client_secret: string },
  nonce: string,
): Promise<string> {
  const verifier = base64url.encode(crypto.getRandomValues(new Uint8Array(32)));
  const challenge = base64url.encode(
    new Uint8Array(await crypto.subtle.digest('SHA-256', new TextEncoder().encode(verifier))),
  );
  const auth = new URL(issuerOp.endpoints.authorization);
  auth.search = new URLSearchParams({
    client_id: client.client_id,
    response_type: 'code',
    scope: 'openid',
    redirect_uri: OTHER_REDIRECT,
    state: 'elsewhere-state',
    nonce,
    code_challenge: challenge,
    code_challenge_method: 'S256',
  }).toString();
  const { redirectedTo } = await issuerOp.authorize(auth.href, { account: 'alice' });
  const code = new URL(redirectedTo).searchParams.get('code')!;
  const res = await issuerOp.exchangeCode(
    client.client_id,
    client.client_secret,
    code,
    OTHER_REDIRECT,
    verifier,
  );
  expect(res.status).toBe(200);
  return res.body.id_token!;
}

async function outcome(sessionId: string, userId: string, provider = 'idt') {
  const session = await app.request('GET', `/v1/tenants/${t.tenantId}/connect/sessions/${sessionId}`, {
    key: t.adminKey,
  });
  const [stored] = await app.custos.runtime.dataSource.query(
    `SELECT count(*)::int AS n FROM connections
      WHERE tenant_id = $1 AND user_id = $2 AND provider = $3 AND revoked_at IS NULL`,
    [t.tenantId, userId, provider],
  );
  const failures: { reason: string; check: string | null }[] = await app.custos.runtime.dataSource.query(
    `SELECT details->>'reason' AS reason, details->>'check' AS check FROM audit_events
      WHERE action = 'connect_session.failed' AND details->>'sessionId' = $1 ORDER BY id`,
    [sessionId],
  );
  return { status: session.body.status as string, connections: stored.n as number, failures };
}

const local = (url: string) => localPath(url, PUBLIC_URL);

beforeAll(async () => {
  op = await startOAuthProvider({
    clients: [
      {
        ...CLIENT,
        redirect_uris: [
          `${PUBLIC_URL}/connect/callback/idt`,
          `${PUBLIC_URL}/connect/callback/idt-nokeys`,
          `${PUBLIC_URL}/connect/callback/idt-deadkeys`,
        ],
      },
      { ...OTHER, redirect_uris: [OTHER_REDIRECT] },
    ],
    users: { alice: { email: 'alice@example.com' } },
  });
  elsewhere = await startOAuthProvider({
    clients: [{ ...CLIENT, redirect_uris: [OTHER_REDIRECT] }],
    users: { alice: {} },
  });
  proxy = http.createServer((req, res) => {
    void (async () => {
      const body = await readBody(req);
      if (req.url === '/jwks') {
        jwksRequests++;
        const keys = await fetch(op.endpoints.jwks);
        res.writeHead(keys.status, { 'content-type': 'application/json' }).end(await keys.text());
        return;
      }
      const upstream = await fetch(op.endpoints.token, {
        method: 'POST',
        headers: {
          'content-type': String(req.headers['content-type']),
          accept: 'application/json',
          ...(req.headers.authorization ? { authorization: req.headers.authorization } : {}),
        },
        body,
      });
      let out = await upstream.text();
      if (upstream.status === 200 && rewrite) {
        const json = JSON.parse(out) as { id_token?: string };
        const next = await rewrite(json.id_token!);
        if (next === undefined) delete json.id_token;
        else json.id_token = next;
        out = JSON.stringify(json);
      }
      res
        .writeHead(upstream.status, { 'content-type': 'application/json', 'cache-control': 'no-store' })
        .end(out);
    })().catch((err: Error) => res.writeHead(500).end(err.message));
  });
  await new Promise<void>((r) => proxy.listen(0, '127.0.0.1', r));
  proxyHost = `127.0.0.1:${(proxy.address() as AddressInfo).port}`;
  const probe = http.createServer();
  await new Promise<void>((r) => probe.listen(0, '127.0.0.1', r));
  deadHost = `127.0.0.1:${(probe.address() as AddressInfo).port}`;
  await new Promise((r) => probe.close(r));
  app = await startTestApp({
    CUSTOS_PUBLIC_URL: PUBLIC_URL,
    CUSTOS_OUTBOUND_ALLOW_HOSTS: `${op.hostPort},${proxyHost},${deadHost}`,
  });
  t = await createTenant(app);
  // The JWK Set is fetched through the proxy, so the test can see that it is fetched (and cached).
  await putProvider('idt', { jwksUri: `http://${proxyHost}/jwks` });
  await putProvider('idt-nokeys', {});
  await putProvider('idt-deadkeys', { jwksUri: `http://${deadHost}/jwks` });
});

afterEach(() => {
  rewrite = null;
});

afterAll(async () => {
  await app?.close();
  await op?.close();
  await elsewhere?.close();
  await new Promise((r) => proxy?.close(r));
});

describe('a provider with jwksUri', () => {
  it('keeps the sub of a verified ID token as the provider account id', async () => {
    const before = jwksRequests;
    const { done, sessionId } = await connect('good-user');
    expect(done.status).toBe(200);
    expect(done.raw).toContain('is connected');
    const [row] = await app.custos.runtime.dataSource.query(
      `SELECT external_account_id FROM connections
        WHERE tenant_id = $1 AND user_id = 'good-user' AND provider = 'idt' AND revoked_at IS NULL`,
      [t.tenantId],
    );
    expect(row.external_account_id).toBe('alice');
    const [completed] = await app.custos.runtime.dataSource.query(
      `SELECT details FROM audit_events WHERE action = 'connect_session.completed' AND details->>'sessionId' = $1`,
      [sessionId],
    );
    expect(completed.details).toMatchObject({ externalAccountId: 'alice', idToken: 'verified' });
    expect(jwksRequests - before).toBe(1);
    // A second flow uses the cached key set.
    expect((await connect('good-user-2')).done.status).toBe(200);
    expect(jwksRequests - before).toBe(1);
  });

  it('refuses an ID token whose claims were changed after signing, and stores nothing', async () => {
    rewrite = async (idToken) => {
      const [header, payload, signature] = idToken.split('.');
      const claims = JSON.parse(Buffer.from(payload, 'base64url').toString('utf8'));
      const forged = Buffer.from(JSON.stringify({ ...claims, sub: 'mallory' })).toString('base64url');
      return `${header}.${forged}.${signature}`;
    };
    const { done, sessionId } = await connect('tampered-user');
    expect(done.status).toBe(502);
    expect(String(done.headers['content-type'])).toMatch(/^text\/html/);
    expect(done.raw).toContain('could not be verified');
    expect(done.raw).not.toContain('is connected');
    expect(await outcome(sessionId, 'tampered-user')).toEqual({
      status: 'failed',
      connections: 0,
      failures: [{ reason: 'id_token_invalid', check: 'signature' }],
    });
  });

  it('refuses an ID token re-signed with another key under the provider’s kid', async () => {
    const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const attackerKey = await importJWK(privateKey.export({ format: 'jwk' }) as JWK, 'RS256');
    rewrite = async (idToken) =>
      new SignJWT({ ...decodeJwt(idToken), sub: 'mallory' })
        .setProtectedHeader({ alg: 'RS256', kid: 'test-rs256' })
        .sign(attackerKey);
    const { done, sessionId } = await connect('resigned-user');
    expect(done.status).toBe(502);
    expect(await outcome(sessionId, 'resigned-user')).toEqual({
      status: 'failed',
      connections: 0,
      failures: [{ reason: 'id_token_invalid', check: 'signature' }],
    });
  });

  it('refuses an unsigned ID token (alg none) and one forged with HMAC keyed by the public key', async () => {
    const jwks = (await (await fetch(op.endpoints.jwks)).json()) as { keys: JWK[] };
    const publicJwk = JSON.stringify(jwks.keys[0]);
    const forgeries: [string, (idToken: string) => Promise<string>][] = [
      [
        'none',
        async (idToken) => {
          const header = Buffer.from(JSON.stringify({ alg: 'none', typ: 'JWT' })).toString('base64url');
          return `${header}.${idToken.split('.')[1]}.`;
        },
      ],
      [
        'hmac',
        async (idToken) =>
          new SignJWT(decodeJwt(idToken))
            .setProtectedHeader({ alg: 'HS256', kid: 'test-rs256' })
            .sign(new TextEncoder().encode(publicJwk)),
      ],
    ];
    for (const [name, forge] of forgeries) {
      rewrite = forge;
      const user = `forged-${name}`;
      const { done, sessionId } = await connect(user);
      expect({ name, status: done.status }).toEqual({ name, status: 502 });
      const result = await outcome(sessionId, user);
      expect({ name, status: result.status, connections: result.connections }).toEqual({
        name,
        status: 'failed',
        connections: 0,
      });
      expect(result.failures).toHaveLength(1);
    }
  });

  it('refuses a genuine ID token issued to another client (wrong audience)', async () => {
    let nonce: string | null = null;
    rewrite = async () => genuineIdToken(op, OTHER, nonce!);
    const { done, sessionId } = await connect('audience-user', 'idt', (n) => (nonce = n));
    expect(done.status).toBe(502);
    const result = await outcome(sessionId, 'audience-user');
    expect(result).toMatchObject({ status: 'failed', connections: 0 });
    expect(result.failures).toHaveLength(1);
  });

  it('refuses a genuine ID token from another issuer, for this client and nonce', async () => {
    let nonce: string | null = null;
    rewrite = async () => genuineIdToken(elsewhere, CLIENT, nonce!);
    const { done, sessionId } = await connect('issuer-user', 'idt', (n) => (nonce = n));
    expect(done.status).toBe(502);
    const result = await outcome(sessionId, 'issuer-user');
    expect(result).toMatchObject({ status: 'failed', connections: 0 });
    expect(result.failures).toHaveLength(1);
  });

  it('refuses a response without an ID token when the flow asked for one', async () => {
    rewrite = async () => undefined;
    const { done, sessionId } = await connect('missing-user');
    expect(done.status).toBe(502);
    expect(await outcome(sessionId, 'missing-user')).toMatchObject({ status: 'failed', connections: 0 });
  });

  it('fails with a page, and stores nothing, when the key set cannot be fetched', async () => {
    const { done, sessionId } = await connect('deadkeys-user', 'idt-deadkeys');
    expect(done.status).toBe(502);
    expect(done.raw).toContain('signing keys could not be fetched');
    expect(await outcome(sessionId, 'deadkeys-user', 'idt-deadkeys')).toEqual({
      status: 'failed',
      connections: 0,
      failures: [{ reason: 'id_token_keys_unavailable', check: 'keys_unavailable' }],
    });
  });

  it('refuses at save a jwksUri the SSRF guard refuses, and a jwksUri without an issuer', async () => {
    const base = {
      key: 'idt-bad',
      name: 'Bad',
      authMode: 'oauth2',
      oauth2: { authorizationUrl: op.endpoints.authorization, tokenUrl: op.endpoints.token },
    };
    const metadata = await app.request('PUT', `/v1/tenants/${t.tenantId}/providers/idt-bad`, {
      key: t.adminKey,
      body: {
        ...base,
        oauth2: { ...base.oauth2, issuer: op.issuer, jwksUri: 'http://169.254.169.254/jwks' },
      },
    });
    expect(metadata.status).toBe(400);
    expect(metadata.body.error).toBe('outbound_url_refused');
    expect(metadata.raw).toContain('oauth2.jwksUri');
    const noIssuer = await app.request('PUT', `/v1/tenants/${t.tenantId}/providers/idt-bad`, {
      key: t.adminKey,
      body: { ...base, oauth2: { ...base.oauth2, jwksUri: op.endpoints.jwks } },
    });
    expect(noIssuer.status).toBe(400);
    expect(noIssuer.body.error).toBe('validation_failed');
    expect(noIssuer.raw).toContain('oauth2.issuer');
  });
});

describe('a provider without jwksUri', () => {
  it('connects without reading the ID token: no account id, even from a tampered token', async () => {
    rewrite = async (idToken) => {
      const [header, payload, signature] = idToken.split('.');
      const claims = JSON.parse(Buffer.from(payload, 'base64url').toString('utf8'));
      return `${header}.${Buffer.from(JSON.stringify({ ...claims, sub: 'mallory' })).toString('base64url')}.${signature}`;
    };
    const { done, sessionId } = await connect('nokeys-user', 'idt-nokeys');
    expect(done.status).toBe(200);
    const [row] = await app.custos.runtime.dataSource.query(
      `SELECT external_account_id FROM connections
        WHERE tenant_id = $1 AND user_id = 'nokeys-user' AND provider = 'idt-nokeys' AND revoked_at IS NULL`,
      [t.tenantId],
    );
    expect(row.external_account_id).toBeNull();
    const [completed] = await app.custos.runtime.dataSource.query(
      `SELECT details FROM audit_events WHERE action = 'connect_session.completed' AND details->>'sessionId' = $1`,
      [sessionId],
    );
    expect(completed.details).toMatchObject({ externalAccountId: null, idToken: 'not_read' });
  });
});
