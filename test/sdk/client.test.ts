/**
 * @custos/sdk's CustosClient against a real Custos listening on loopback: real connectors (secret and
 * private_key_jwt), a real identity provider's user tokens, oidc-provider as the third-party provider for the
 * connect flow. Retries are checked through a real HTTP server in front of Custos that answers 503, 429,
 * resets or hangs before it lets requests through. Requests are counted with a wrapping `fetch`.
 */
import { KeyObject, randomUUID } from 'node:crypto';
import http from 'node:http';
import net from 'node:net';
import { decodeJwt, decodeProtectedHeader, exportJWK, generateKeyPair } from 'jose';
import {
  ConsentRequiredError,
  CustosClient,
  CustosError,
  getAccessToken,
  type CustosClientOptions,
  type RetryEvent,
} from '../../sdk/src/index.js';
import { startTestApp, type TestApp } from '../support/app.js';
import { cookieJar, localPath } from '../support/browser.js';
import {
  createConnector,
  createKeyedConnector,
  createTenant,
  importConnection,
  saveCustomProvider,
  saveProviderApp,
  trustIdentityProvider,
  uniqueSecret,
  type KeyedConnector,
  type SecretConnector,
  type TenantFixture,
} from '../support/factories.js';
import { newSigningKey, signJwt, startTestIdp, type TestIdp } from '../support/idp.js';
import { startOAuthProvider, type TestOAuthProvider } from '../support/oauth-provider.js';

const ACCESS_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:access_token';
const API_KEY_TYPE = 'urn:custos:params:oauth:token-type:api-key';
const OP_CLIENT = { client_id: 'sdk-inhouse', client_secret: uniqueSecret('op-secret') };

let app: TestApp;
let url: string;
let idp: TestIdp;
let op: TestOAuthProvider;
/** Users connected by import, plus the `inhouse` provider for the connect flow; no identity provider. */
let t: TenantFixture;
/** Trusts `idp` for user tokens. */
let u: TenantFixture;
let secretConnector: SecretConnector;
let keyedConnector: KeyedConnector;
let userTokenConnector: SecretConnector;
let front: FrontServer;

const tokens = {
  aliceGithub: uniqueSecret('gho-alice'),
  aliceOpenai: uniqueSecret('sk-alice'),
  bobGithub: uniqueSecret('gho-bob'),
  aliceGithubU: uniqueSecret('gho-alice-u'),
};

async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as net.AddressInfo;
  await new Promise((r) => server.close(r));
  return port;
}

/** A fetch that records each request (method, URL, form body) before sending it. */
function countingFetch() {
  const requests: { method: string; url: string; body?: string }[] = [];
  const wrapped: typeof fetch = (input, init) => {
    requests.push({
      method: init?.method ?? 'GET',
      url: String(input instanceof Request ? input.url : input),
      ...(typeof init?.body === 'string' && { body: init.body }),
    });
    return fetch(input, init);
  };
  return { requests, fetch: wrapped };
}

function secretClient(extra: Partial<CustosClientOptions> = {}, connector = secretConnector) {
  const counter = countingFetch();
  const client = new CustosClient({
    url,
    clientId: connector.clientId,
    clientSecret: connector.clientSecret,
    fetch: counter.fetch,
    ...extra,
  });
  return { client, requests: counter.requests };
}

function keyedClient(extra: Partial<CustosClientOptions> = {}) {
  const counter = countingFetch();
  const client = new CustosClient({
    url,
    clientId: keyedConnector.clientId,
    privateKey: keyedConnector.key.privateKey,
    keyId: keyedConnector.key.kid,
    fetch: counter.fetch,
    ...extra,
  });
  return { client, requests: counter.requests };
}

/** What `fn` rejects with (fails the test if it resolves). */
async function rejection(fn: () => Promise<unknown>): Promise<any> {
  try {
    await fn();
  } catch (err) {
    return err;
  }
  throw new Error('expected a rejection');
}

/** Waits (polling, with a deadline) until `condition` holds. */
async function until(condition: () => boolean, ms = 5_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 20));
  }
}

type Fault = { status: number; retryAfter?: string; body?: unknown } | { reset: true } | { hang: true };

interface FrontServer {
  url: string;
  /** Requests that reached this server, faulted or forwarded. */
  seen: number;
  /** Taken one per request, in order; with none left, requests go through to Custos. */
  faults: Fault[];
  /** When set, every request gets this answer instead of going through. */
  always: ((n: number) => Fault) | null;
  close(): Promise<void>;
}

/** A real HTTP server in front of Custos that misbehaves on demand, then forwards. */
async function startFrontServer(targetPort: number): Promise<FrontServer> {
  const front = { seen: 0, faults: [] as Fault[], always: null } as unknown as FrontServer;
  const server = http.createServer((req, res) => {
    front.seen++;
    const fault = front.always ? front.always(front.seen) : front.faults.shift();
    if (fault && 'reset' in fault) {
      req.socket.destroy();
      return;
    }
    if (fault && 'hang' in fault) return;
    if (fault) {
      req.resume();
      res.writeHead(fault.status, {
        'content-type': 'application/json',
        ...(fault.retryAfter !== undefined && { 'retry-after': fault.retryAfter }),
      });
      res.end(
        JSON.stringify(
          fault.body ?? {
            error: fault.status === 429 ? 'slow_down' : 'temporarily_unavailable',
            error_description: `HTTP ${fault.status} from the front server`,
          },
        ),
      );
      return;
    }
    const upstream = http.request(
      { host: '127.0.0.1', port: targetPort, method: req.method, path: req.url, headers: req.headers },
      (answer) => {
        res.writeHead(answer.statusCode ?? 502, answer.headers);
        answer.pipe(res);
      },
    );
    upstream.on('error', () => res.destroy());
    req.pipe(upstream);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  front.url = `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`;
  front.close = () =>
    new Promise<void>((r) => {
      server.closeAllConnections();
      server.close(() => r());
    });
  return front;
}

/** The user opens the connect link, signs in at the provider and consents, as a browser would. */
async function completeConnectFlow(connectUri: string, account: string): Promise<void> {
  const jar = cookieJar();
  const page = await app.request('GET', localPath(connectUri, url));
  expect(page.status).toBe(200);
  jar.take(page.headers['set-cookie']);
  const csrf = /name="csrf" value="([^"]+)"/.exec(page.raw)?.[1];
  const start = await app.request('POST', localPath(connectUri, url) + '/start', {
    payload: `csrf=${csrf}`,
    headers: { 'content-type': 'application/x-www-form-urlencoded', cookie: jar.header() },
  });
  expect(start.status).toBe(303);
  jar.take(start.headers['set-cookie']);
  const { redirectedTo } = await op.authorize(String(start.headers.location), { account });
  const done = await app.request('GET', localPath(redirectedTo, url), { headers: { cookie: jar.header() } });
  expect(done.status).toBe(200);
}

beforeAll(async () => {
  const port = await freePort();
  url = `http://127.0.0.1:${port}`;
  idp = await startTestIdp();
  op = await startOAuthProvider({
    clients: [{ ...OP_CLIENT, redirect_uris: [`${url}/connect/callback/inhouse`] }],
    users: { carol: { email: 'carol@example.com' } },
  });
  app = await startTestApp({
    HOST: '127.0.0.1',
    PORT: String(port),
    CUSTOS_PUBLIC_URL: url,
    CUSTOS_OUTBOUND_ALLOW_HOSTS: `${idp.hostPort},${op.hostPort}`,
  });
  await app.custos.app.listen({ port, host: '127.0.0.1' });

  t = await createTenant(app);
  await saveCustomProvider(app, t, {
    key: 'inhouse',
    name: 'In-house Git',
    authMode: 'oauth2',
    oauth2: {
      authorizationUrl: op.endpoints.authorization,
      tokenUrl: op.endpoints.token,
      issuer: op.issuer,
      jwksUri: op.endpoints.jwks,
      scopes: ['openid', 'offline_access', 'repo'],
    },
  });
  await saveProviderApp(app, t, 'inhouse', OP_CLIENT);
  secretConnector = await createConnector(app, t, {
    name: 'SDK secret',
    allowedProviders: ['github', 'openai', 'inhouse'],
  });
  keyedConnector = await createKeyedConnector(app, t, await newSigningKey(), {
    name: 'SDK keyed',
    allowedProviders: ['github', 'inhouse'],
  });
  await importConnection(app, t, 'alice', 'github', {
    type: 'oauth2',
    accessToken: tokens.aliceGithub,
    scopes: ['repo', 'read:user'],
    expiresAt: new Date(Date.now() + 3600_000).toISOString(),
  });
  await importConnection(app, t, 'alice', 'openai', { type: 'api_key', apiKey: tokens.aliceOpenai });
  await importConnection(app, t, 'bob', 'github', {
    type: 'oauth2',
    accessToken: tokens.bobGithub,
    scopes: ['repo'],
  });

  u = await createTenant(app);
  await trustIdentityProvider(app, u, idp);
  userTokenConnector = await createConnector(app, u, {
    name: 'SDK user tokens',
    allowedProviders: ['github'],
    delegation: 'user_token',
  });
  await importConnection(app, u, 'alice', 'github', {
    type: 'oauth2',
    accessToken: tokens.aliceGithubU,
    scopes: ['repo'],
    expiresAt: new Date(Date.now() + 3600_000).toISOString(),
  });

  front = await startFrontServer(port);
}, 60_000);

afterAll(async () => {
  await front?.close();
  await app?.close();
  await op?.close();
  await idp?.close();
});

beforeEach(() => {
  front.faults.length = 0;
  front.always = null;
  front.seen = 0;
});

describe('getAccessToken', () => {
  it('releases a trusted user’s own token to a connector authenticating with its secret', async () => {
    const { client, requests } = secretClient();
    const before = Date.now();
    const token = await client.getAccessToken({ userId: 'alice', provider: 'github', scope: 'repo' });
    expect(token).toEqual({
      accessToken: tokens.aliceGithub,
      tokenType: 'Bearer',
      issuedTokenType: ACCESS_TOKEN_TYPE,
      expiresAt: expect.any(Date),
      scopes: ['repo', 'read:user'],
    });
    expect(token.expiresAt!.getTime()).toBeGreaterThan(before + 3500_000);
    expect(token.expiresAt!.getTime()).toBeLessThanOrEqual(Date.now() + 3600_000);
    expect(requests).toHaveLength(1);
    expect(requests[0].url).toBe(`${url}/oauth/token`);
    const form = new URLSearchParams(requests[0].body);
    expect(Object.fromEntries(form)).toEqual({
      grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange',
      subject_token: 'alice',
      subject_token_type: 'urn:custos:params:oauth:token-type:user-id',
      audience: 'github',
      scope: 'repo',
    });
  });

  it('releases an API key with token type N_A and no expiry; the one-shot function works too', async () => {
    const token = await getAccessToken({
      url,
      clientId: secretConnector.clientId,
      clientSecret: secretConnector.clientSecret,
      userId: 'alice',
      provider: 'openai',
    });
    expect(token).toEqual({
      accessToken: tokens.aliceOpenai,
      tokenType: 'N_A',
      issuedTokenType: API_KEY_TYPE,
      scopes: [],
    });
  });

  it('signs a fresh client assertion for every request (private_key_jwt), from any form of the key', async () => {
    const key = keyedConnector.key;
    const jwk = await exportJWK(key.privateKey);
    const keyObject = KeyObject.from(key.privateKey);
    const pem = keyObject.export({ type: 'pkcs8', format: 'pem' }).toString();
    const forms = [key.privateKey, { ...jwk, kid: key.kid }, keyObject, pem];
    const { requests, fetch: counting } = countingFetch();
    for (const privateKey of forms) {
      const client = new CustosClient({
        url,
        clientId: keyedConnector.clientId,
        privateKey,
        keyId: key.kid,
        cache: false,
        fetch: counting,
      });
      // Twice each: an assertion is accepted once, so the second only passes with a fresh one.
      for (let i = 0; i < 2; i++) {
        const token = await client.getAccessToken({ userId: 'alice', provider: 'github' });
        expect(token.accessToken).toBe(tokens.aliceGithub);
      }
    }
    expect(requests).toHaveLength(8);
    const jtis = new Set<string>();
    for (const r of requests) {
      const form = new URLSearchParams(r.body);
      expect(form.get('client_assertion_type')).toBe(
        'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
      );
      const assertion = form.get('client_assertion')!;
      expect(decodeProtectedHeader(assertion)).toEqual({ alg: 'ES256', kid: key.kid });
      const claims = decodeJwt(assertion);
      expect(claims).toMatchObject({
        iss: keyedConnector.clientId,
        sub: keyedConnector.clientId,
        aud: `${url}/oauth/token`,
      });
      expect(claims.exp! - claims.iat!).toBeLessThanOrEqual(60);
      expect(claims.exp! - claims.iat!).toBeGreaterThan(0);
      jtis.add(String(claims.jti));
    }
    expect(jtis.size).toBe(8);
  });

  it('exchanges a user token (JWT) from the tenant’s identity provider', async () => {
    const { client, requests } = secretClient({}, userTokenConnector);
    const subjectToken = await idp.token({ sub: 'alice', jti: randomUUID() });
    const token = await client.getAccessToken({ subjectToken, provider: 'github' });
    expect(token.accessToken).toBe(tokens.aliceGithubU);
    const form = new URLSearchParams(requests[0].body);
    expect(form.get('subject_token')).toBe(subjectToken);
    expect(form.get('subject_token_type')).toBe('urn:ietf:params:oauth:token-type:jwt');
  });

  it('throws ConsentRequiredError with the connect link, its expiry and the session for a user with no connection', async () => {
    const { client } = secretClient();
    const before = Date.now();
    const err = await rejection(() =>
      client.getAccessToken({ userId: `nobody-${randomUUID()}`, provider: 'inhouse', scope: ['repo'] }),
    );
    expect(err).toBeInstanceOf(ConsentRequiredError);
    expect(err).toBeInstanceOf(CustosError);
    expect(err).toMatchObject({
      name: 'ConsentRequiredError',
      code: 'consent_required',
      status: 400,
      provider: 'inhouse',
      scopes: ['repo'],
      reason: 'not_connected',
    });
    expect(err.connectUri).toMatch(new RegExp(`^${url}/connect/cst_[A-Za-z0-9_-]{43}$`));
    expect(err.expiresAt).toBeInstanceOf(Date);
    expect(err.expiresAt.getTime()).toBeGreaterThan(before + 14 * 60_000);
    expect(err.expiresAt.getTime()).toBeLessThanOrEqual(Date.now() + 15 * 60_000);
    expect(err.sessionId).toMatch(/^[0-9a-f-]{36}$/);
    expect(err.sessionUri).toBe(`${url}/v1/tenants/${t.tenantId}/connect/sessions/${err.sessionId}`);
    // The one-time link stays out of the message, the stack and serialised forms.
    const linkToken = err.connectUri.split('/').pop();
    expect(err.message).not.toContain(linkToken);
    expect(String(err.stack)).not.toContain(linkToken);
    expect(JSON.stringify(err)).not.toContain(linkToken);
    expect(Object.keys(err)).not.toContain('connectUri');
  });

  it('turns other refusals into CustosError with the OAuth code and status, and never retries them', async () => {
    const { client, requests } = secretClient();
    const target = await rejection(() => client.getAccessToken({ userId: 'alice', provider: 'notion' }));
    expect(target).toBeInstanceOf(CustosError);
    expect(target).not.toBeInstanceOf(ConsentRequiredError);
    expect(target).toMatchObject({ code: 'invalid_target', status: 400 });
    expect(target.message).toContain('may not use that provider');
    expect(requests).toHaveLength(1);

    const wrongSecret = uniqueSecret('wrong');
    const bad = secretClient({}, { ...secretConnector, clientSecret: wrongSecret });
    const denied = await rejection(() => bad.client.getAccessToken({ userId: 'alice', provider: 'github' }));
    expect(denied).toMatchObject({ code: 'invalid_client', status: 401 });
    expect(bad.requests).toHaveLength(1);
    for (const text of [denied.message, String(denied.stack), JSON.stringify(denied)]) {
      expect(text).not.toContain(wrongSecret);
    }
  });

  it('refuses bad requests before any I/O, without echoing tokens', async () => {
    const { client, requests } = secretClient();
    const jwt = await idp.token();
    const cases: Record<string, unknown>[] = [
      { provider: 'github' },
      { provider: 'github', userId: 'alice', subjectToken: jwt },
      { provider: '', userId: 'alice' },
      { provider: 'git hub', userId: 'alice' },
      { provider: 'github', userId: '' },
      { provider: 'github', userId: 'ali\u0000ce' },
      { provider: 'github', userId: 'alice', scope: ['re po'] },
      { provider: 'github', userId: 'alice', scope: ['"repo"'] },
      { provider: 'github', userId: 'alice', scope: 42 },
      { provider: 'github', subjectToken: 'opaque-token-value-123' },
      { provider: 'github', userId: 'alice', signal: 'stop' },
    ];
    for (const request of cases) {
      const err = await rejection(() => client.getAccessToken(request as never));
      expect(err).toBeInstanceOf(CustosError);
      expect(err.code).toBe('invalid_argument');
      expect(err.message).not.toContain(jwt);
      expect(err.message).not.toContain('opaque-token-value-123');
    }
    const reason = new Error('already stopped');
    await expect(
      client.getAccessToken({ userId: 'alice', provider: 'github', signal: AbortSignal.abort(reason) }),
    ).rejects.toBe(reason);
    expect(requests).toHaveLength(0);
  });

  it('refuses bad options at construction, without echoing secrets', async () => {
    const secret = uniqueSecret('never-shown');
    const { privateKey, publicKey } = await generateKeyPair('ES256', { extractable: true });
    const base = { url, clientId: 'c1' };
    const cases: Record<string, unknown>[] = [
      { ...base },
      { ...base, clientSecret: secret, privateKey },
      { ...base, url: 'ftp://127.0.0.1', clientSecret: secret },
      { ...base, url: `http://user:${secret}@127.0.0.1`, clientSecret: secret },
      { ...base, url: 'custos.example', clientSecret: secret },
      { ...base, clientId: '', clientSecret: secret },
      { ...base, clientSecret: '' },
      { ...base, clientSecret: secret, keyId: 'k1' },
      { ...base, clientSecret: secret, timeoutMs: 0 },
      { ...base, clientSecret: secret, retry: { attempts: 0 } },
      { ...base, clientSecret: secret, cache: { maxEntries: 0 } },
      { ...base, privateKey: publicKey },
      { ...base, privateKey: { kty: 'oct', k: secret } },
      { ...base, privateKey: privateKey, algorithm: 'HS256' },
      { ...base, privateKey: privateKey, algorithm: 'RS256' },
      { ...base, privateKey: `-----BEGIN PRIVATE KEY-----\n${secret}\n-----END PRIVATE KEY-----` },
    ];
    for (const options of cases) {
      let err: any;
      try {
        new CustosClient(options as never);
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(CustosError);
      expect(err.code).toBe('invalid_argument');
      expect(err.message).not.toContain(secret);
    }
  });
});

describe('the token cache', () => {
  it('serves a repeated request from memory without asking Custos again', async () => {
    const { client, requests } = secretClient();
    const first = await client.getAccessToken({ userId: 'alice', provider: 'github' });
    first.scopes.push('tampered');
    const second = await client.getAccessToken({ userId: 'alice', provider: 'github' });
    expect(requests).toHaveLength(1);
    expect(second.accessToken).toBe(tokens.aliceGithub);
    // Each caller gets its own copy.
    expect(second.scopes).toEqual(['repo', 'read:user']);
    // An API key (no expires_in) is cached too.
    await client.getAccessToken({ userId: 'alice', provider: 'openai' });
    await client.getAccessToken({ userId: 'alice', provider: 'openai' });
    expect(requests).toHaveLength(2);
  });

  it('keys entries by user, provider and scope set', async () => {
    const { client, requests } = secretClient();
    const get = (userId: string, provider: string, scope?: string | string[]) =>
      client.getAccessToken({ userId, provider, scope });
    expect((await get('alice', 'github', ['repo'])).accessToken).toBe(tokens.aliceGithub);
    expect((await get('bob', 'github', ['repo'])).accessToken).toBe(tokens.bobGithub);
    expect((await get('alice', 'openai')).accessToken).toBe(tokens.aliceOpenai);
    await get('alice', 'github', ['read:user']);
    await get('alice', 'github', 'read:user repo');
    expect(requests).toHaveLength(5);
    // The same scope set in another order or form, and each earlier request again: all from the cache.
    expect((await get('alice', 'github', ['repo', 'read:user'])).accessToken).toBe(tokens.aliceGithub);
    expect((await get('alice', 'github', 'repo')).accessToken).toBe(tokens.aliceGithub);
    expect((await get('bob', 'github', ['repo'])).accessToken).toBe(tokens.bobGithub);
    expect((await get('alice', 'openai')).accessToken).toBe(tokens.aliceOpenai);
    expect(requests).toHaveLength(5);
  });

  it('keeps at most maxEntries tokens, the least recently used out first', async () => {
    const { client, requests } = secretClient({ cache: { maxEntries: 2 } });
    await client.getAccessToken({ userId: 'alice', provider: 'github' });
    await client.getAccessToken({ userId: 'bob', provider: 'github' });
    await client.getAccessToken({ userId: 'alice', provider: 'openai' });
    expect(requests).toHaveLength(3);
    await client.getAccessToken({ userId: 'alice', provider: 'openai' });
    expect(requests).toHaveLength(3);
    await client.getAccessToken({ userId: 'alice', provider: 'github' });
    expect(requests).toHaveLength(4);
  });

  it('drops entries on forget(), by user, provider, or all', async () => {
    const { client, requests } = secretClient();
    const fill = async () => {
      await client.getAccessToken({ userId: 'alice', provider: 'github' });
      await client.getAccessToken({ userId: 'bob', provider: 'github' });
      await client.getAccessToken({ userId: 'alice', provider: 'openai' });
    };
    await fill();
    expect(requests).toHaveLength(3);
    client.forget({ userId: 'alice', provider: 'github' });
    await fill();
    expect(requests).toHaveLength(4);
    client.forget({ provider: 'github' });
    await fill();
    expect(requests).toHaveLength(6);
    client.forget();
    await fill();
    expect(requests).toHaveLength(9);
  });

  it('shares one request among concurrent identical asks, and a waiter’s abort leaves the others be', async () => {
    const { client, requests } = secretClient();
    const all = await Promise.all(
      Array.from({ length: 5 }, () => client.getAccessToken({ userId: 'alice', provider: 'github' })),
    );
    expect(requests).toHaveLength(1);
    expect(new Set(all.map((tok) => tok.accessToken))).toEqual(new Set([tokens.aliceGithub]));
    await Promise.all([
      client.getAccessToken({ userId: 'bob', provider: 'github' }),
      client.getAccessToken({ userId: 'alice', provider: 'openai' }),
    ]);
    expect(requests).toHaveLength(3);

    const fresh = secretClient();
    const controller = new AbortController();
    const reason = new Error('caller gave up');
    const aborted = fresh.client.getAccessToken({
      userId: 'bob',
      provider: 'github',
      signal: controller.signal,
    });
    const kept = fresh.client.getAccessToken({ userId: 'bob', provider: 'github' });
    controller.abort(reason);
    await expect(aborted).rejects.toBe(reason);
    await expect(kept).resolves.toMatchObject({ accessToken: tokens.bobGithub });
    expect(fresh.requests).toHaveLength(1);
  });

  it('never serves a token past its expiry', async () => {
    // A stand-in token endpoint that issues one-second tokens, each a new one.
    front.always = (n) => ({
      status: 200,
      body: {
        access_token: `short-${n}`,
        token_type: 'Bearer',
        issued_token_type: ACCESS_TOKEN_TYPE,
        expires_in: 1,
      },
    });
    const client = new CustosClient({
      url: front.url,
      clientId: secretConnector.clientId,
      clientSecret: secretConnector.clientSecret,
    });
    const first = await client.getAccessToken({ userId: 'alice', provider: 'github' });
    let hits = 0;
    let next: string | undefined;
    const deadline = Date.now() + 5_000;
    while (next === undefined && Date.now() < deadline) {
      const seen = front.seen;
      const token = await client.getAccessToken({ userId: 'alice', provider: 'github' });
      if (front.seen === seen) {
        hits++;
        expect(token.accessToken).toBe(first.accessToken);
        expect(Date.now()).toBeLessThan(first.expiresAt!.getTime());
      } else {
        next = token.accessToken;
      }
      await new Promise((r) => setTimeout(r, 20));
    }
    expect(hits).toBeGreaterThan(0);
    expect(next).toBe('short-2');
  });

  it('keeps a token no longer than the user token it was exchanged for', async () => {
    const { client, requests } = secretClient({}, userTokenConnector);
    const exp = Math.floor(Date.now() / 1000) + 1;
    const subjectToken = await idp.token({ sub: 'alice', exp, jti: randomUUID() });
    await client.getAccessToken({ subjectToken, provider: 'github' });
    expect(requests).toHaveLength(1);
    // The provider token is good for an hour, the user token for a second: once that is past, ask again
    // (Custos accepts it within its clock tolerance).
    await until(() => Date.now() > exp * 1000);
    await client.getAccessToken({ subjectToken, provider: 'github' });
    expect(requests).toHaveLength(2);
  });

  it('keys user tokens by the whole token: a forged one naming the same user misses and is refused', async () => {
    const { client, requests } = secretClient({}, userTokenConnector);
    const now = Math.floor(Date.now() / 1000);
    const claims = {
      iss: idp.issuer,
      aud: 'custos',
      sub: 'alice',
      iat: now,
      exp: now + 300,
      jti: randomUUID(),
    };
    const genuine = await signJwt(idp.keys[0], claims);
    const forged = await signJwt(await newSigningKey(idp.keys[0].kid), claims);
    expect((await client.getAccessToken({ subjectToken: genuine, provider: 'github' })).accessToken).toBe(
      tokens.aliceGithubU,
    );
    const err = await rejection(() => client.getAccessToken({ subjectToken: forged, provider: 'github' }));
    expect(err).toMatchObject({ code: 'invalid_grant', status: 400 });
    expect(err.message).not.toContain(forged);
    expect(requests).toHaveLength(2);
    // The genuine token is still served from the cache; another genuine token for alice is its own entry.
    await client.getAccessToken({ subjectToken: genuine, provider: 'github' });
    expect(requests).toHaveLength(2);
    await client.getAccessToken({
      subjectToken: await idp.token({ sub: 'alice', jti: randomUUID() }),
      provider: 'github',
    });
    expect(requests).toHaveLength(3);
  });
});

describe('retries', () => {
  function frontClient(extra: Partial<CustosClientOptions> = {}) {
    const events: RetryEvent[] = [];
    const client = new CustosClient({
      url: front.url,
      clientId: secretConnector.clientId,
      clientSecret: secretConnector.clientSecret,
      cache: false,
      onRetry: (e) => events.push(e),
      ...extra,
    });
    return { client, events };
  }
  const alice = { userId: 'alice', provider: 'github' };

  it('retries a 503 after its Retry-After, then gets the token', async () => {
    front.faults.push({ status: 503, retryAfter: '1' });
    const { client, events } = frontClient();
    expect((await client.getAccessToken(alice)).accessToken).toBe(tokens.aliceGithub);
    expect(front.seen).toBe(2);
    expect(events).toEqual([{ attempt: 1, delayMs: 1000, code: 'temporarily_unavailable', status: 503 }]);
  });

  it('retries 429 too, caps Retry-After at maxDelayMs, and reports an HTTP-date Retry-After when it gives up', async () => {
    front.faults.push({ status: 429, retryAfter: '120' }, { status: 503, retryAfter: '120' });
    const capped = frontClient({ retry: { maxDelayMs: 20 } });
    expect((await capped.client.getAccessToken(alice)).accessToken).toBe(tokens.aliceGithub);
    expect(capped.events.map((e) => [e.code, e.status, e.delayMs])).toEqual([
      ['slow_down', 429, 20],
      ['temporarily_unavailable', 503, 20],
    ]);
    expect(front.seen).toBe(3);

    front.seen = 0;
    const date = new Date(Date.now() + 120_000).toUTCString();
    front.faults.push({ status: 503, retryAfter: date }, { status: 503, retryAfter: date });
    const giveUp = frontClient({ retry: { attempts: 2, maxDelayMs: 10 } });
    const err = await rejection(() => giveUp.client.getAccessToken(alice));
    expect(err).toBeInstanceOf(CustosError);
    expect(err).toMatchObject({ code: 'temporarily_unavailable', status: 503 });
    expect(err.retryAfterSeconds).toBeGreaterThanOrEqual(118);
    expect(err.retryAfterSeconds).toBeLessThanOrEqual(121);
    expect(front.seen).toBe(2);
  });

  it('retries a reset connection and an attempt that times out', async () => {
    front.faults.push({ reset: true }, { hang: true });
    const { client, events } = frontClient({ timeoutMs: 1_000, retry: { baseDelayMs: 10 } });
    expect((await client.getAccessToken(alice)).accessToken).toBe(tokens.aliceGithub);
    expect(events.map((e) => e.code)).toEqual(['network_error', 'timeout']);
    expect(front.seen).toBe(3);
  });

  it('gives up after the configured attempts with the last error', async () => {
    front.faults.push(
      { status: 503, retryAfter: '0' },
      { status: 503, retryAfter: '0' },
      { status: 503, retryAfter: '0' },
    );
    const { client } = frontClient();
    await expect(client.getAccessToken(alice)).rejects.toMatchObject({ code: 'temporarily_unavailable' });
    expect(front.seen).toBe(3);
  });

  it('never retries a 400, nor anything with retry: false', async () => {
    const { client, events } = frontClient();
    await expect(client.getAccessToken({ userId: 'alice', provider: 'notion' })).rejects.toMatchObject({
      code: 'invalid_target',
    });
    front.faults.push({ status: 400, body: { error: 'invalid_request', error_description: 'nope' } });
    await expect(client.getAccessToken(alice)).rejects.toMatchObject({
      code: 'invalid_request',
      status: 400,
    });
    expect(front.seen).toBe(2);
    expect(events).toEqual([]);

    front.faults.push({ status: 503, retryAfter: '0' });
    const once = frontClient({ retry: false });
    await expect(once.client.getAccessToken(alice)).rejects.toMatchObject({ status: 503 });
    expect(front.seen).toBe(3);
  });

  it('stops at once when the caller aborts, while waiting to retry or during an attempt', async () => {
    front.faults.push({ status: 503, retryAfter: '30' });
    const controller = new AbortController();
    const reason = new Error('tool call cancelled');
    const { client } = frontClient({
      retry: { maxDelayMs: 60_000 },
      onRetry: () => controller.abort(reason),
    });
    await expect(client.getAccessToken({ ...alice, signal: controller.signal })).rejects.toBe(reason);
    expect(front.seen).toBe(1);

    front.faults.push({ hang: true });
    const during = new AbortController();
    const pending = client.getAccessToken({ ...alice, signal: during.signal });
    await until(() => front.seen === 2);
    during.abort(reason);
    await expect(pending).rejects.toBe(reason);
    expect(front.seen).toBe(2);
  });

  it('reads through another way in with publicUrl: assertions name the public token endpoint', async () => {
    const { client } = keyedClient({ url: front.url, publicUrl: url });
    expect((await client.getAccessToken(alice)).accessToken).toBe(tokens.aliceGithub);
    expect(front.seen).toBe(1);
    const err = await rejection(() =>
      client.getAccessToken({ userId: `via-${randomUUID()}`, provider: 'inhouse' }),
    );
    expect(err).toBeInstanceOf(ConsentRequiredError);
    expect(err.sessionUri.startsWith(`${url}/`)).toBe(true);
    const session = await client.getConnectSession(err.sessionUri);
    expect(session.status).toBe('pending');
    // The session was read through the front server, not at the public URL directly.
    expect(front.seen).toBe(3);
  });
});

describe('connect sessions', () => {
  it('waitForConnectSession resolves once the user completes the connect flow; the token is theirs', async () => {
    const { client } = secretClient();
    const err = await rejection(() => client.getAccessToken({ userId: 'carol', provider: 'inhouse' }));
    expect(err).toBeInstanceOf(ConsentRequiredError);
    expect(err.reason).toBe('not_connected');
    const waiting = client.waitForConnectSession(err.sessionUri, { intervalMs: 100 });
    await completeConnectFlow(err.connectUri, 'carol');
    const session = await waiting;
    expect(session).toMatchObject({
      id: err.sessionId,
      userId: 'carol',
      provider: 'inhouse',
      status: 'completed',
    });
    expect(session.createdAt).toBeInstanceOf(Date);
    // The link's expiry (from expires_in, whole seconds) and the session's agree.
    expect(Math.abs(session.expiresAt.getTime() - err.expiresAt.getTime())).toBeLessThan(5_000);

    const token = await client.getAccessToken({ userId: 'carol', provider: 'inhouse' });
    const introspection = await fetch(op.endpoints.introspection, {
      method: 'POST',
      headers: {
        'content-type': 'application/x-www-form-urlencoded',
        authorization:
          'Basic ' + Buffer.from(`${OP_CLIENT.client_id}:${OP_CLIENT.client_secret}`).toString('base64'),
      },
      body: new URLSearchParams({ token: token.accessToken }),
    }).then((r) => r.json());
    expect(introspection).toMatchObject({ active: true, sub: 'carol' });
  });

  it('reads a session with a private_key_jwt connector; only the connector that got it may read it', async () => {
    const keyed = keyedClient();
    const err = await rejection(() =>
      keyed.client.getAccessToken({ userId: `dave-${randomUUID()}`, provider: 'inhouse' }),
    );
    expect(err).toBeInstanceOf(ConsentRequiredError);
    const session = await keyed.client.getConnectSession(err.sessionUri);
    expect(session).toMatchObject({ id: err.sessionId, provider: 'inhouse', status: 'pending' });
    const bearer = keyed.requests.at(-1)!;
    expect(bearer.method).toBe('GET');
    expect(bearer.url).toBe(err.sessionUri);

    const other = secretClient();
    await expect(other.client.getConnectSession(err.sessionUri)).rejects.toMatchObject({
      code: 'not_found',
      status: 404,
    });
  });

  it('reports expired once the session’s expiry has passed', async () => {
    const { client } = secretClient();
    const err = await rejection(() =>
      client.getAccessToken({ userId: `erin-${randomUUID()}`, provider: 'inhouse' }),
    );
    await app.custos.runtime.dataSource.query(
      `UPDATE connect_sessions SET expires_at = now() - interval '1 second' WHERE id = $1`,
      [err.sessionId],
    );
    const session = await client.waitForConnectSession(err.sessionUri, { intervalMs: 50 });
    expect(session.status).toBe('expired');
  });

  it('stops waiting when the signal aborts', async () => {
    const { client } = secretClient();
    const err = await rejection(() =>
      client.getAccessToken({ userId: `frank-${randomUUID()}`, provider: 'inhouse' }),
    );
    const controller = new AbortController();
    const reason = new Error('elicitation cancelled');
    const waiting = client.waitForConnectSession(err.sessionUri, {
      signal: controller.signal,
      intervalMs: 60_000,
    });
    controller.abort(reason);
    await expect(waiting).rejects.toBe(reason);
  });

  it('refuses a session URI outside its Custos before sending any credentials', async () => {
    const { client, requests } = secretClient();
    const path = `/v1/tenants/${t.tenantId}/connect/sessions/${randomUUID()}`;
    const port = new URL(url).port;
    const foreign = [
      `http://evil.example${path}`,
      `http://localhost:${port}${path}`,
      `https://127.0.0.1:${port}${path}`,
      `http://127.0.0.1:${port}@evil.example${path}`,
      `http://127.0.0.1:1${path}`,
      `${url}/v1/tenants/${t.tenantId}/connectors`,
      `${url}${path}?next=http://evil.example`,
      `${url}${path}/../../../../admin-keys`,
      'not a url',
      '',
    ];
    for (const uri of foreign) {
      await expect(client.getConnectSession(uri)).rejects.toMatchObject({ code: 'invalid_argument' });
      await expect(client.waitForConnectSession(uri)).rejects.toMatchObject({ code: 'invalid_argument' });
    }
    expect(requests).toHaveLength(0);
  });
});
