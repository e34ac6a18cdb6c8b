/**
 * The token endpoint end to end: real connectors, real user tokens signed with jose and verified against a
 * JWKS served on loopback, real credentials under envelope encryption, real PostgreSQL.
 */
import { randomUUID } from 'node:crypto';
import { AuditBatcher } from '../../../src/audit/audit-batcher.js';
import { UsedAssertionsRepository } from '../../../src/identity/used-assertions.repository.js';
import { DecisionBatcher } from '../../../src/broker/decision-batcher.js';
import { parseBasicAuth } from '../../../src/identity/client-auth.js';
import { JwksResolver } from '../../../src/identity/jwks-resolver.js';
import { SubjectTokenVerifier } from '../../../src/identity/subject-token.js';
import { DataKeyService } from '../../../src/crypto/data-key.service.js';
import { adminDatabaseUrl, databaseUrlFor, workerDatabaseName } from '../../support/env.js';
import { startTestApp, type TestApp } from '../../support/app.js';
import {
  basicAuth,
  createConnector,
  createKeyedConnector,
  createTenant,
  importConnection,
  saveProviderApp,
  trustIdentityProvider,
  uniqueSecret,
  type KeyedConnector,
  type SecretConnector,
  type TenantFixture,
} from '../../support/factories.js';
import { newSigningKey, signJwt, startTestIdp, type TestIdp } from '../../support/idp.js';
import { startTcpProxy } from '../../support/tcp-proxy.js';
import { dropAuditTrigger } from '../../support/audit.js';

const EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
const JWT_TYPE = 'urn:ietf:params:oauth:token-type:jwt';
const USER_ID_TYPE = 'urn:custos:params:oauth:token-type:user-id';
const ASSERTION_TYPE = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer';
const PUBLIC_URL = 'https://custos.example.test';

let app: TestApp;
let idp: TestIdp;
let otherIdp: TestIdp;
let a: TenantFixture;
let b: TenantFixture;

type Client = SecretConnector | KeyedConnector;
let basicClient: SecretConnector;
let jwtClient: KeyedConnector;
let trustedClient: SecretConnector;
let bClient: SecretConnector;

/** Credentials stored for users in tenant A, to compare with what the endpoint releases. */
const secrets = {
  githubAlice: uniqueSecret('gho'),
  githubRefresh: uniqueSecret('ghr'),
  openaiAlice: uniqueSecret('sk'),
  githubBobB: uniqueSecret('gho-b'),
};

function form(params: Record<string, string | string[] | undefined>): string {
  const sp = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v === undefined) continue;
    for (const one of Array.isArray(v) ? v : [v]) sp.append(k, one);
  }
  return sp.toString();
}

async function tokenRequest(
  params: Record<string, string | string[] | undefined>,
  headers: Record<string, string> = {},
) {
  return app.request('POST', '/oauth/token', {
    payload: form(params),
    headers: { 'content-type': 'application/x-www-form-urlencoded', ...headers },
  });
}

async function exchange(
  client: Client,
  subjectToken: string,
  extra: Record<string, string | undefined> = {},
  subjectTokenType = JWT_TYPE,
) {
  const params: Record<string, string | undefined> = {
    grant_type: EXCHANGE,
    subject_token: subjectToken,
    subject_token_type: subjectTokenType,
    audience: 'github',
    ...extra,
  };
  if ('key' in client) {
    params.client_assertion_type = ASSERTION_TYPE;
    params.client_assertion = await assertion(client);
    return tokenRequest(params);
  }
  return tokenRequest(params, { authorization: basicAuth(client) });
}

async function assertion(client: KeyedConnector, claims: Record<string, unknown> = {}, opts = {}) {
  const now = Math.floor(Date.now() / 1000);
  return signJwt(
    client.key,
    {
      iss: client.clientId,
      sub: client.clientId,
      aud: `${PUBLIC_URL}/oauth/token`,
      jti: randomUUID(),
      iat: now,
      exp: now + 60,
      ...claims,
    },
    opts,
  );
}

const db = () => app.custos.runtime.dataSource;
const lastEvents = async (t: TenantFixture, n = 1) =>
  (
    await db().query(
      `SELECT * FROM audit_events WHERE tenant_id = $1 AND action = 'token.exchange' ORDER BY id DESC LIMIT $2`,
      [t.tenantId, n],
    )
  ).map((r: { details: unknown }) => r);

beforeAll(async () => {
  idp = await startTestIdp();
  otherIdp = await startTestIdp();
  app = await startTestApp({
    CUSTOS_OUTBOUND_ALLOW_HOSTS: `${idp.hostPort},${otherIdp.hostPort}`,
    CUSTOS_PUBLIC_URL: PUBLIC_URL,
  });
  a = await createTenant(app);
  b = await createTenant(app);
  // Connect links are only handed out for providers the tenant has set up.
  await saveProviderApp(app, a, 'github', { client_id: 'gh-app', client_secret: 'gh-app-secret' });
  await saveProviderApp(app, b, 'github', { client_id: 'gh-app', client_secret: 'gh-app-secret' });
  await trustIdentityProvider(app, a, idp);
  await trustIdentityProvider(app, b, otherIdp);
  basicClient = await createConnector(app, a, {
    name: 'Docs MCP',
    allowedProviders: ['github', 'openai'],
    allowedScopes: { github: ['repo', 'read:user', 'gist'] },
    delegation: 'user_token',
  });
  const key = await newSigningKey('conn-1');
  jwtClient = await createKeyedConnector(app, a, key, {
    name: 'Keyed MCP',
    allowedProviders: ['github'],
    delegation: 'user_token',
  });
  trustedClient = await createConnector(app, a, {
    name: 'Backend job',
    allowedProviders: ['github'],
    delegation: 'trusted',
  });
  bClient = await createConnector(app, b, {
    name: 'B MCP',
    allowedProviders: ['github'],
    delegation: 'user_token',
  });
  await importConnection(app, a, 'alice', 'github', {
    type: 'oauth2',
    accessToken: secrets.githubAlice,
    refreshToken: secrets.githubRefresh,
    scopes: ['repo', 'read:user'],
    expiresAt: new Date(Date.now() + 3600_000).toISOString(),
  });
  await importConnection(app, a, 'alice', 'openai', { type: 'api_key', apiKey: secrets.openaiAlice });
  await importConnection(app, b, 'bob', 'github', {
    type: 'oauth2',
    accessToken: secrets.githubBobB,
    scopes: ['repo'],
  });
});

afterAll(async () => {
  await app.close();
  await idp.close();
  await otherIdp.close();
});

describe('a successful exchange', () => {
  it('returns the user’s own access token, no-store, and audits actor, subject, agent, provider and scopes', async () => {
    const res = await exchange(basicClient, await idp.token({ azp: 'claude-desktop' }), { scope: 'repo' });
    expect(res.status).toBe(200);
    expect(res.headers['cache-control']).toBe('no-store');
    expect(res.headers.pragma).toBe('no-cache');
    expect(res.body).toEqual({
      access_token: secrets.githubAlice,
      issued_token_type: 'urn:ietf:params:oauth:token-type:access_token',
      token_type: 'Bearer',
      expires_in: expect.any(Number),
      scope: 'repo read:user',
    });
    expect(res.body.expires_in).toBeGreaterThan(3500);
    expect(res.body.expires_in).toBeLessThanOrEqual(3600);
    expect(res.raw).not.toContain(secrets.githubRefresh);
    const [ev] = await lastEvents(a);
    expect(ev).toMatchObject({
      outcome: 'allowed',
      actor_type: 'connector',
      actor_id: basicClient.id,
      subject_user_id: 'alice',
      provider: 'github',
    });
    expect(ev.connection_id).toEqual(expect.any(String));
    expect(ev.details).toMatchObject({
      clientId: basicClient.clientId,
      authMethod: 'client_secret_basic',
      agentClientId: 'claude-desktop',
      subjectTokenType: 'jwt',
      trustedAssertion: false,
      issuer: idp.issuer,
      requestedScopes: ['repo'],
      grantedScopes: ['repo', 'read:user'],
    });
    expect(JSON.stringify(ev)).not.toContain(secrets.githubAlice);
  });

  it('releases a replaced credential at once, never the one it replaced', async () => {
    const first = uniqueSecret('h1');
    await importConnection(app, a, 'hank', 'github', { type: 'oauth2', accessToken: first });
    const token = await idp.token({ sub: 'hank' });
    expect((await exchange(basicClient, token)).body.access_token).toBe(first);
    const second = uniqueSecret('h2');
    await importConnection(app, a, 'hank', 'github', { type: 'oauth2', accessToken: second });
    expect((await exchange(basicClient, token)).body.access_token).toBe(second);
  });

  it('takes the agent from client_id when the token has no azp', async () => {
    const res = await exchange(basicClient, await idp.token({ client_id: 'cursor' }));
    expect(res.status).toBe(200);
    expect((await lastEvents(a))[0].details.agentClientId).toBe('cursor');
  });

  it('releases API keys with the api-key token type and token_type N_A', async () => {
    const res = await exchange(basicClient, await idp.token(), { audience: 'openai' });
    expect(res.status).toBe(200);
    expect(res.body).toEqual({
      access_token: secrets.openaiAlice,
      issued_token_type: 'urn:custos:params:oauth:token-type:api-key',
      token_type: 'N_A',
    });
  });

  it('decodes form-urlencoded Basic credentials as RFC 6749 §2.3.1 says', () => {
    const header = 'Basic ' + Buffer.from('a%3Ab+c:s%2Bd+e%25').toString('base64');
    expect(parseBasicAuth(header)).toEqual({ clientId: 'a:b c', secret: 's+d e%' });
    expect(parseBasicAuth('Basic ' + Buffer.from('no-colon').toString('base64'))).toBeNull();
    expect(parseBasicAuth('Basic ' + Buffer.from('%zz:x').toString('base64'))).toBeNull();
    expect(parseBasicAuth('Bearer abc')).toBeNull();
  });

  it('verifies a user token once, then serves it from the verified-token cache', async () => {
    const verifier = app.custos.app.get(SubjectTokenVerifier);
    const token = await idp.token({ jti: randomUUID() });
    const before = verifier.verifications;
    for (let i = 0; i < 5; i++) expect((await exchange(basicClient, token)).status).toBe(200);
    expect(verifier.verifications - before).toBe(1);
  });

  it('keeps concurrent requests for different users apart in one batch', async () => {
    const users = ['alice', 'carol-batch', 'dave-batch'];
    await importConnection(app, a, 'dave-batch', 'github', {
      type: 'oauth2',
      accessToken: 'dave-' + secrets.githubAlice,
    });
    const results = await Promise.all(
      Array.from({ length: 30 }, async (_, i) => {
        const user = users[i % 3];
        const res = await exchange(basicClient, await idp.token({ sub: user }));
        return { user, res };
      }),
    );
    for (const { user, res } of results) {
      if (user === 'alice') expect(res.body.access_token).toBe(secrets.githubAlice);
      if (user === 'dave-batch') expect(res.body.access_token).toBe('dave-' + secrets.githubAlice);
      if (user === 'carol-batch') expect(res.body.error).toBe('consent_required');
    }
  });

  it('group-commits audit events of concurrent requests and releases none before its commit', async () => {
    const batcher = app.custos.app.get(AuditBatcher);
    const decisions = app.custos.app.get(DecisionBatcher);
    const token = await idp.token();
    const before = { ...batcher.stats };
    const decisionsBefore = { ...decisions.stats };
    const results = await Promise.all(Array.from({ length: 40 }, () => exchange(basicClient, token)));
    expect(results.every((r) => r.status === 200)).toBe(true);
    const events = batcher.stats.events - before.events;
    const batches = batcher.stats.batches - before.batches;
    expect(events).toBe(40);
    expect(batches).toBeLessThan(40);
    // The decision reads of concurrent requests are batched too.
    expect(decisions.stats.lookups - decisionsBefore.lookups).toBe(40);
    expect(decisions.stats.batches - decisionsBefore.batches).toBeLessThan(40);
    // Each got its own user's answer (the batch keeps requests apart).
    expect(new Set(results.map((r) => r.body.access_token))).toEqual(new Set([secrets.githubAlice]));
  });
});

describe('private_key_jwt connectors', () => {
  it('accepts a signed assertion once and refuses its replay', async () => {
    const token = await idp.token();
    const client_assertion = await assertion(jwtClient);
    const params = {
      grant_type: EXCHANGE,
      subject_token: token,
      subject_token_type: JWT_TYPE,
      audience: 'github',
      client_assertion_type: ASSERTION_TYPE,
      client_assertion,
    };
    const first = await tokenRequest(params);
    expect(first.status).toBe(200);
    expect(first.body.access_token).toBe(secrets.githubAlice);
    const replay = await tokenRequest(params);
    expect(replay.status).toBe(401);
    expect(replay.body.error).toBe('invalid_client');
    expect((await lastEvents(a))[0].details.reason).toBe('assertion_replayed');
  });

  it.each([
    ['the wrong audience', { aud: 'https://elsewhere.example/token' }, {}, 'assertion_bad_aud'],
    ['another subject', { sub: 'someone' }, {}, 'assertion_bad_sub'],
    ['an expired assertion', { exp: Math.floor(Date.now() / 1000) - 120 }, {}, 'assertion_expired'],
    [
      'a lifetime over five minutes',
      { exp: Math.floor(Date.now() / 1000) + 3600 },
      {},
      'assertion_lifetime_too_long',
    ],
    ['no jti', { jti: undefined }, {}, 'assertion_bad_jti'],
    ['an unknown kid', {}, { kid: 'nope' }, 'unknown_key'],
    ['a jku header', {}, { header: { jku: 'https://attacker.example/jwks' } }, 'forbidden_header'],
  ])('refuses an assertion with %s', async (_label, claims, opts, reason) => {
    const res = await tokenRequest({
      grant_type: EXCHANGE,
      subject_token: await idp.token(),
      subject_token_type: JWT_TYPE,
      audience: 'github',
      client_assertion_type: ASSERTION_TYPE,
      client_assertion: await assertion(jwtClient, claims, opts),
    });
    expect(res.status).toBe(401);
    expect(res.body.error).toBe('invalid_client');
    expect(res.headers['www-authenticate']).toBeUndefined();
    const [ev] = await lastEvents(a);
    expect(ev.outcome).toBe('denied');
    expect(ev.actor_id).toBe(jwtClient.id);
    expect(String(ev.details.reason)).toMatch(
      new RegExp(`^${reason.replace('assertion_bad_jti', '(assertion_bad_jti|assertion_bad_)')}`),
    );
  });

  it('refuses an assertion signed by another key or with alg none', async () => {
    const stranger = await newSigningKey('conn-1');
    const forged = await assertion({ ...jwtClient, key: stranger });
    const unsigned =
      Buffer.from(JSON.stringify({ alg: 'none', kid: 'conn-1' })).toString('base64url') +
      '.' +
      Buffer.from(
        JSON.stringify({
          iss: jwtClient.clientId,
          sub: jwtClient.clientId,
          aud: `${PUBLIC_URL}/oauth/token`,
          jti: randomUUID(),
          exp: Math.floor(Date.now() / 1000) + 60,
        }),
      ).toString('base64url') +
      '.';
    for (const client_assertion of [forged, unsigned]) {
      const res = await tokenRequest({
        grant_type: EXCHANGE,
        subject_token: await idp.token(),
        subject_token_type: JWT_TYPE,
        audience: 'github',
        client_assertion_type: ASSERTION_TYPE,
        client_assertion,
      });
      expect(res.status).toBe(401);
      expect(res.body.error).toBe('invalid_client');
    }
  });

  it('refuses Basic and an assertion together, and client_secret_post', async () => {
    const both = await tokenRequest(
      {
        grant_type: EXCHANGE,
        subject_token: await idp.token(),
        subject_token_type: JWT_TYPE,
        audience: 'github',
        client_assertion_type: ASSERTION_TYPE,
        client_assertion: await assertion(jwtClient),
      },
      { authorization: basicAuth(basicClient) },
    );
    expect(both.status).toBe(400);
    expect(both.body.error).toBe('invalid_request');
    const post = await tokenRequest({
      grant_type: EXCHANGE,
      client_id: basicClient.clientId,
      client_secret: basicClient.clientSecret,
      subject_token: await idp.token(),
      subject_token_type: JWT_TYPE,
      audience: 'github',
    });
    expect(post.status).toBe(401);
    expect(post.body.error).toBe('invalid_client');
  });
});

describe('client authentication failures', () => {
  it('answers 401 invalid_client with a Basic challenge for a wrong secret, an unknown client or none', async () => {
    const token = await idp.token();
    const wrong = await exchange({ ...basicClient, clientSecret: basicClient.clientSecret + 'x' }, token);
    const unknown = await exchange(
      { clientId: 'cus_ci_AAAAAAAAAAAAAAAAAAAAAA', clientSecret: 'x'.repeat(40), id: '' },
      token,
    );
    for (const res of [wrong, unknown]) {
      expect(res.status).toBe(401);
      expect(res.body.error).toBe('invalid_client');
      expect(res.headers['www-authenticate']).toMatch(/^Basic realm="custos"/);
      expect(res.headers['cache-control']).toBe('no-store');
      expect(res.raw).not.toContain(secrets.githubAlice);
    }
    const none = await tokenRequest({
      grant_type: EXCHANGE,
      subject_token: token,
      subject_token_type: JWT_TYPE,
      audience: 'github',
    });
    expect(none.status).toBe(401);
    expect(none.body.error).toBe('invalid_client');
    const [ev] = await lastEvents(a);
    expect(ev.details.reason).toBe('bad_secret');
    const unknownEvent = await db().query(
      `SELECT * FROM audit_events WHERE tenant_id IS NULL AND action = 'token.exchange' AND details->>'reason' = 'unknown_client'`,
    );
    expect(unknownEvent.length).toBeGreaterThan(0);
  });

  it('refuses a disabled connector at once, although its registration is cached, and accepts it again when enabled', async () => {
    const c = await createConnector(app, a, {
      name: 'soon disabled',
      allowedProviders: ['github'],
      delegation: 'user_token',
    });
    const token = await idp.token();
    expect((await exchange(c, token)).status).toBe(200);
    const patch = await app.request('PATCH', `/v1/tenants/${a.tenantId}/connectors/${c.id}`, {
      key: a.adminKey,
      body: { disabled: true },
    });
    expect(patch.status).toBe(200);
    const res = await exchange(c, token);
    expect(res.status).toBe(401);
    expect(res.body.error).toBe('invalid_client');
    expect((await lastEvents(a))[0].details.reason).toBe('disabled');
    await app.request('PATCH', `/v1/tenants/${a.tenantId}/connectors/${c.id}`, {
      key: a.adminKey,
      body: { disabled: false },
    });
    expect((await exchange(c, token)).status).toBe(200);
  });

  it('applies a policy change and a secret rotation on the next request', async () => {
    const c = await createConnector(app, a, {
      name: 'changing',
      allowedProviders: ['github', 'openai'],
      delegation: 'user_token',
    });
    const token = await idp.token();
    expect((await exchange(c, token, { audience: 'openai' })).status).toBe(200);
    await app.request('PATCH', `/v1/tenants/${a.tenantId}/connectors/${c.id}`, {
      key: a.adminKey,
      body: { allowedProviders: ['github'] },
    });
    const narrowed = await exchange(c, token, { audience: 'openai' });
    expect(narrowed.status).toBe(400);
    expect(narrowed.body.error).toBe('invalid_target');
    const rotated = await app.request('POST', `/v1/tenants/${a.tenantId}/connectors/${c.id}/secret`, {
      key: a.adminKey,
    });
    expect(rotated.status).toBe(200);
    expect((await exchange(c, token)).status).toBe(401);
    expect((await exchange({ ...c, clientSecret: rotated.body.clientSecret }, token)).status).toBe(200);
  });

  it('refuses a deleted connector', async () => {
    const c = await createConnector(app, a, {
      name: 'deleted',
      allowedProviders: ['github'],
      delegation: 'user_token',
    });
    const token = await idp.token();
    expect((await exchange(c, token)).status).toBe(200);
    expect(
      (await app.request('DELETE', `/v1/tenants/${a.tenantId}/connectors/${c.id}`, { key: a.adminKey }))
        .status,
    ).toBe(204);
    expect((await exchange(c, token)).status).toBe(401);
  });
});

describe('subject tokens', () => {
  const now = () => Math.floor(Date.now() / 1000);
  it.each([
    ['expired', async () => idp.token({ exp: now() - 120 }), 'subject_token_expired'],
    ['not yet valid', async () => idp.token({ nbf: now() + 600 }), 'subject_token_not_yet_valid'],
    ['for another audience', async () => idp.token({ aud: 'someone-else' }), 'subject_token_wrong_audience'],
    ['from an untrusted issuer', async () => otherIdp.token(), 'subject_token_untrusted_issuer'],
    ['without exp', async () => idp.token({ exp: undefined }), 'subject_token_invalid_claims'],
    [
      'signed by an unknown kid',
      async () => idp.token({}, { kid: 'unknown-kid' }),
      'subject_token_unknown_key',
    ],
    [
      'naming its own key URL (jku)',
      async () => idp.token({}, { header: { jku: 'https://evil.example/jwks' } }),
      'subject_token_forbidden_header',
    ],
    [
      'naming a x5u',
      async () => idp.token({}, { header: { x5u: 'https://evil.example/cert' } }),
      'subject_token_forbidden_header',
    ],
    [
      'with an algorithm the issuer does not allow',
      async () => {
        const k = await newSigningKey(idp.keys[0].kid, 'ES384');
        return idp.token({}, { alg: 'ES384' }, k);
      },
      'subject_token_alg_not_allowed',
    ],
    [
      'with a forged signature',
      async () => idp.token({}, {}, await newSigningKey(idp.keys[0].kid)),
      'subject_token_bad_signature',
    ],
    ['that is not a JWT', async () => 'not-a-jwt', 'subject_token_malformed'],
    [
      'unsigned (alg none)',
      async () => {
        const enc = (o: unknown) => Buffer.from(JSON.stringify(o)).toString('base64url');
        return `${enc({ alg: 'none' })}.${enc({ iss: idp.issuer, aud: 'custos', sub: 'alice', exp: now() + 60 })}.`;
      },
      'subject_token_alg_none',
    ],
  ])('refuses a token %s with invalid_grant', async (_label, make, reason) => {
    const res = await exchange(basicClient, await make());
    expect(res.status).toBe(400);
    expect(res.body.error).toBe('invalid_grant');
    expect(res.body.access_token).toBeUndefined();
    const [ev] = await lastEvents(a);
    expect(ev.outcome).toBe('denied');
    expect(ev.details.reason).toBe(reason);
    expect(ev.actor_id).toBe(basicClient.id);
  });

  it('fetches the JWKS once, and an unknown kid triggers at most one refetch per cooldown', async () => {
    const resolver = app.custos.app.get(JwksResolver);
    const before = resolver.fetches;
    for (let i = 0; i < 3; i++) {
      const res = await exchange(basicClient, await idp.token({}, { kid: `forged-${i}` }));
      expect(res.body.error).toBe('invalid_grant');
    }
    expect(resolver.fetches - before).toBeLessThanOrEqual(1);
  });

  it('drops cached verifications at once when the identity provider changes', async () => {
    const token = await idp.token({ jti: randomUUID() });
    expect((await exchange(basicClient, token)).status).toBe(200);
    const oldKeys = idp.keys;
    // The tenant now trusts only inline keys that did not sign this token.
    const fresh = await newSigningKey('fresh');
    const res = await app.request('PUT', `/v1/tenants/${a.tenantId}/identity-providers/main`, {
      key: a.adminKey,
      body: {
        issuer: idp.issuer,
        jwks: { keys: [fresh.publicJwk] },
        audiences: ['custos'],
        algorithms: ['ES256'],
      },
    });
    expect(res.status).toBe(200);
    const after = await exchange(basicClient, token);
    expect(after.status).toBe(400);
    expect(after.body.error).toBe('invalid_grant');
    const withFresh = await exchange(basicClient, await idp.token({}, {}, fresh));
    expect(withFresh.status).toBe(200);
    idp.keys = oldKeys;
    await trustIdentityProvider(app, a, idp);
    expect((await exchange(basicClient, token)).status).toBe(200);
  });

  it('answers 503, not invalid_grant, when the issuer’s JWKS cannot be fetched', async () => {
    const t = await createTenant(app);
    // Allow-listing is by host:port: the live IdP's host, at a path that answers 404.
    const issuer = `${idp.issuer}down/`;
    await trustIdentityProvider(app, t, { issuer, jwksUri: idp.jwksUri + '?down' });
    const c = await createConnector(app, t, {
      name: 'x',
      allowedProviders: ['github'],
      delegation: 'user_token',
    });
    const res = await exchange(c, await idp.token({ iss: issuer }));
    expect(res.status).toBe(503);
    expect(res.body.error).toBe('temporarily_unavailable');
    expect(res.body.access_token).toBeUndefined();
  });
});

describe('trusted delegation', () => {
  it('lets a trusted connector assert a user id, and audits it as a trusted assertion', async () => {
    const res = await exchange(trustedClient, 'alice', {}, USER_ID_TYPE);
    expect(res.status).toBe(200);
    expect(res.body.access_token).toBe(secrets.githubAlice);
    const [ev] = await lastEvents(a);
    expect(ev.subject_user_id).toBe('alice');
    expect(ev.details).toMatchObject({ subjectTokenType: 'user_id', trustedAssertion: true });
  });

  it('refuses user-id subjects from a connector that is not trusted', async () => {
    const res = await exchange(basicClient, 'alice', {}, USER_ID_TYPE);
    expect(res.status).toBe(400);
    expect(res.body.error).toBe('invalid_request');
    expect((await lastEvents(a))[0].details.reason).toBe('delegation_not_trusted');
  });
});

describe('policy: providers and scopes', () => {
  it('answers invalid_target for an unknown provider or one the connector may not use', async () => {
    const token = await idp.token();
    for (const audience of ['no-such-provider', 'salesforce']) {
      const res = await exchange(basicClient, token, { audience });
      expect(res.status).toBe(400);
      expect(res.body.error).toBe('invalid_target');
    }
  });

  it('answers invalid_scope outside the connector’s allowed scopes, or for a provider without scopes', async () => {
    const token = await idp.token();
    const outside = await exchange(basicClient, token, { scope: 'repo delete_repo' });
    expect(outside.status).toBe(400);
    expect(outside.body.error).toBe('invalid_scope');
    const apiKey = await exchange(basicClient, token, { audience: 'openai', scope: 'anything' });
    expect(apiKey.body.error).toBe('invalid_scope');
    const malformed = await exchange(basicClient, token, { scope: 'a"b' });
    expect(malformed.body.error).toBe('invalid_scope');
  });
});

describe('consent_required', () => {
  it('hands out a fresh one-time connect link bound to the user and provider when there is no connection', async () => {
    const res = await exchange(basicClient, await idp.token({ sub: 'carol' }), { scope: 'repo' });
    expect(res.status).toBe(400);
    expect(res.headers['cache-control']).toBe('no-store');
    expect(res.body).toEqual({
      error: 'consent_required',
      error_description: expect.any(String),
      connect_uri: expect.stringMatching(new RegExp(`^${PUBLIC_URL}/connect/cst_[A-Za-z0-9_-]{43}$`)),
      expires_in: expect.any(Number),
      connect_session_id: expect.stringMatching(/^[0-9a-f-]{36}$/),
      connect_session_uri: `${PUBLIC_URL}/v1/tenants/${a.tenantId}/connect/sessions/${res.body.connect_session_id}`,
      consent_reason: 'not_connected',
    });
    expect(res.body.expires_in).toBeGreaterThan(800);
    expect(res.body.expires_in).toBeLessThanOrEqual(900);
    const again = await exchange(basicClient, await idp.token({ sub: 'carol' }), { scope: 'repo' });
    expect(again.body.connect_uri).not.toBe(res.body.connect_uri);
    const [ev] = await lastEvents(a);
    expect(ev).toMatchObject({ outcome: 'denied', subject_user_id: 'carol', provider: 'github' });
    expect(ev.details).toMatchObject({ reason: 'consent_required', consent: 'not_connected' });
    expect(ev.details.connectSessionId).toBe(again.body.connect_session_id);
    expect(again.body.connect_session_id).not.toBe(res.body.connect_session_id);
    const sessions = await db().query(`SELECT * FROM connect_sessions WHERE id = $1`, [
      ev.details.connectSessionId,
    ]);
    expect(sessions[0]).toMatchObject({
      user_id: 'carol',
      provider: 'github',
      scopes: ['repo'],
      status: 'pending',
      created_by_type: 'connector',
      created_by_id: basicClient.id,
    });
    // The connector that received the link can follow the session's status; another connector cannot.
    const mine = await app.request(
      'GET',
      `/v1/tenants/${a.tenantId}/connect/sessions/${ev.details.connectSessionId}`,
      {
        headers: { authorization: basicAuth(basicClient) },
      },
    );
    expect(mine.status).toBe(200);
    expect(mine.body.status).toBe('pending');
    const theirs = await app.request(
      'GET',
      `/v1/tenants/${a.tenantId}/connect/sessions/${ev.details.connectSessionId}`,
      {
        headers: { authorization: basicAuth(trustedClient) },
      },
    );
    expect(theirs.status).toBe(404);
  });

  it('asks for consent again when the connection was revoked or lacks the requested scope', async () => {
    const conn = await importConnection(app, a, 'dave', 'github', {
      type: 'oauth2',
      accessToken: uniqueSecret('d'),
      scopes: ['read:user'],
    });
    const token = await idp.token({ sub: 'dave' });
    const lacking = await exchange(basicClient, token, { scope: 'repo' });
    expect(lacking.body.error).toBe('consent_required');
    expect(lacking.body.consent_reason).toBe('insufficient_scope');
    const [ev] = await lastEvents(a);
    expect(ev.details.consent).toBe('insufficient_scope');
    const session = await db().query('SELECT scopes FROM connect_sessions WHERE id = $1', [
      ev.details.connectSessionId,
    ]);
    expect(session[0].scopes.sort()).toEqual(['read:user', 'repo']);
    expect((await exchange(basicClient, token)).status).toBe(200);
    const del = await app.request('DELETE', `/v1/tenants/${a.tenantId}/connections/${conn.id}`, {
      key: a.adminKey,
    });
    expect(del.status).toBe(204);
    const revoked = await exchange(basicClient, token);
    expect(revoked.body.error).toBe('consent_required');
  });

  it('asks for consent for an expired access token and for a connection that needs re-authorization', async () => {
    await importConnection(app, a, 'erin', 'github', {
      type: 'oauth2',
      accessToken: uniqueSecret('e'),
      expiresAt: new Date(Date.now() - 1000).toISOString(),
    });
    const expired = await exchange(basicClient, await idp.token({ sub: 'erin' }));
    expect(expired.body.error).toBe('consent_required');
    const conn = await importConnection(app, a, 'frank', 'github', {
      type: 'oauth2',
      accessToken: uniqueSecret('f'),
    });
    await db().query(`UPDATE connections SET status = 'needs_reauth' WHERE id = $1`, [conn.id]);
    const reauth = await exchange(basicClient, await idp.token({ sub: 'frank' }));
    expect(reauth.body.error).toBe('consent_required');
    expect((await lastEvents(a))[0].details.consent).toBe('needs_reauth');
  });
});

describe('malformed requests', () => {
  it('answers unsupported_grant_type and invalid_request in RFC 6749 shape', async () => {
    const auth = { authorization: basicAuth(basicClient) };
    const token = await idp.token();
    const cases: [Record<string, string | string[] | undefined>, string][] = [
      [{ grant_type: 'client_credentials' }, 'unsupported_grant_type'],
      [{ subject_token: token }, 'invalid_request'],
      [{ grant_type: EXCHANGE, subject_token_type: JWT_TYPE, audience: 'github' }, 'invalid_request'],
      [{ grant_type: EXCHANGE, subject_token: token, audience: 'github' }, 'invalid_request'],
      [{ grant_type: EXCHANGE, subject_token: token, subject_token_type: JWT_TYPE }, 'invalid_request'],
      [
        { grant_type: EXCHANGE, subject_token: token, subject_token_type: 'urn:x:other', audience: 'github' },
        'invalid_request',
      ],
      [
        {
          grant_type: EXCHANGE,
          subject_token: token,
          subject_token_type: JWT_TYPE,
          audience: ['github', 'openai'],
        },
        'invalid_request',
      ],
      [
        {
          grant_type: EXCHANGE,
          subject_token: token,
          subject_token_type: JWT_TYPE,
          audience: 'github',
          actor_token: 'x',
        },
        'invalid_request',
      ],
      [
        {
          grant_type: EXCHANGE,
          subject_token: token,
          subject_token_type: JWT_TYPE,
          audience: 'github',
          requested_token_type: 'urn:x',
        },
        'invalid_request',
      ],
    ];
    for (const [params, error] of cases) {
      const res = await tokenRequest(params, auth);
      expect({ params: Object.keys(params), status: res.status, error: res.body.error }).toEqual({
        params: Object.keys(params),
        status: 400,
        error,
      });
      expect(res.body.error_description).toEqual(expect.any(String));
      expect(res.headers['cache-control']).toBe('no-store');
    }
  });

  it('refuses a JSON body', async () => {
    const res = await app.request('POST', '/oauth/token', {
      body: { grant_type: EXCHANGE },
      headers: { authorization: basicAuth(basicClient) },
    });
    expect(res.status).toBe(400);
    expect(res.body.error).toBe('invalid_request');
  });
});

describe('isolation', () => {
  it('keeps tenants apart: another tenant’s connector cannot use this tenant’s users or issuer', async () => {
    // Tenant B does not trust tenant A's issuer.
    const res = await exchange(bClient, await idp.token());
    expect(res.status).toBe(400);
    expect(res.body.error).toBe('invalid_grant');
    // B's own user "alice" has no connection in B: consent, never A's token.
    const own = await exchange(bClient, await otherIdp.token({ sub: 'alice' }));
    expect(own.body.error).toBe('consent_required');
    expect(own.raw).not.toContain(secrets.githubAlice);
    const bob = await exchange(bClient, await otherIdp.token({ sub: 'bob' }));
    expect(bob.body.access_token).toBe(secrets.githubBobB);
    // And A's connector with B's user token.
    const cross = await exchange(basicClient, await otherIdp.token({ sub: 'bob' }));
    expect(cross.body.error).toBe('invalid_grant');
  });

  it('lets a connector create connect sessions only in its own tenant and within its policy', async () => {
    const ok = await app.request('POST', `/v1/tenants/${a.tenantId}/connect/sessions`, {
      headers: { authorization: basicAuth(basicClient) },
      body: { userId: 'gina', provider: 'github', scopes: ['repo'] },
    });
    expect(ok.status).toBe(201);
    expect(ok.body.url).toMatch(/\/connect\/cst_/);
    const other = await app.request('POST', `/v1/tenants/${b.tenantId}/connect/sessions`, {
      headers: { authorization: basicAuth(basicClient) },
      body: { userId: 'gina', provider: 'github' },
    });
    expect(other.status).toBe(404);
    const notAllowed = await app.request('POST', `/v1/tenants/${a.tenantId}/connect/sessions`, {
      headers: { authorization: basicAuth(basicClient) },
      body: { userId: 'gina', provider: 'salesforce' },
    });
    expect(notAllowed.status).toBe(403);
    const badSecret = await app.request('POST', `/v1/tenants/${a.tenantId}/connect/sessions`, {
      headers: { authorization: basicAuth({ ...basicClient, clientSecret: 'wrong-wrong-wrong-wrong' }) },
      body: { userId: 'gina', provider: 'github' },
    });
    expect(badSecret.status).toBe(401);
    // A private_key_jwt connector authenticates with a single-use assertion as a Bearer token.
    const jwt = await assertion(jwtClient);
    const keyed = await app.request('POST', `/v1/tenants/${a.tenantId}/connect/sessions`, {
      headers: { authorization: `Bearer ${jwt}` },
      body: { userId: 'gina', provider: 'github' },
    });
    expect(keyed.status).toBe(201);
    const replay = await app.request('POST', `/v1/tenants/${a.tenantId}/connect/sessions`, {
      headers: { authorization: `Bearer ${jwt}` },
      body: { userId: 'gina', provider: 'github' },
    });
    expect(replay.status).toBe(401);
  });
});

describe('failures are 503, never a token and never 401', () => {
  it('answers 503 and releases nothing when the audit event cannot be written', async () => {
    const token = await idp.token();
    await db()
      .query(`CREATE OR REPLACE FUNCTION test_fail_broker_audit() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN RAISE EXCEPTION 'audit unavailable' USING ERRCODE = '53100'; END $$`);
    await db().query(
      `CREATE TRIGGER test_fail_broker_audit BEFORE INSERT ON audit_events FOR EACH ROW EXECUTE FUNCTION test_fail_broker_audit()`,
    );
    try {
      const res = await exchange(basicClient, token);
      expect(res.status).toBe(503);
      expect(res.body.access_token).toBeUndefined();
      expect(res.raw).not.toContain(secrets.githubAlice);
      expect(res.body.error).toBe('temporarily_unavailable');
      const denied = await exchange(basicClient, token, { audience: 'salesforce' });
      expect(denied.status).toBe(503);
    } finally {
      await dropAuditTrigger(db(), 'test_fail_broker_audit');
    }
    expect((await exchange(basicClient, token)).status).toBe(200);
  });

  it('answers 503 key_unavailable when the tenant’s data key cannot be unwrapped', async () => {
    const t = await createTenant(app);
    await trustIdentityProvider(app, t, idp);
    const c = await createConnector(app, t, {
      name: 'k',
      allowedProviders: ['github'],
      delegation: 'user_token',
    });
    await importConnection(app, t, 'alice', 'github', { type: 'oauth2', accessToken: uniqueSecret('k') });
    const token = await idp.token();
    expect((await exchange(c, token)).status).toBe(200);
    // The wrapped data key no longer opens (as when a customer's key is revoked): drop the cache and tamper.
    await db().query(
      `UPDATE data_keys SET wrapped = overlay(wrapped placing '\\x00'::bytea from length(wrapped) - 3) WHERE tenant_id = $1`,
      [t.tenantId],
    );
    app.custos.app.get(DataKeyService).flushTenant(t.tenantId);
    const res = await exchange(c, token);
    expect(res.status).toBe(503);
    expect(res.body.error).toBe('key_unavailable');
    expect(res.headers['retry-after']).toBeDefined();
    // Other tenants are unaffected.
    expect((await exchange(basicClient, token)).status).toBe(200);
  });

  it('answers 503 temporarily_unavailable when the database is unreachable', async () => {
    const u = new URL(adminDatabaseUrl);
    const proxy = await startTcpProxy(u.hostname, Number(u.port || 5432));
    const viaProxy = new URL(databaseUrlFor(workerDatabaseName()));
    viaProxy.port = String(proxy.port);
    const other = await startTestApp({
      DATABASE_URL: viaProxy.toString(),
      // The same root keys: a second replica of this deployment.
      CUSTOS_ROOT_KEYS: app.custos.runtime.config.rootKeys,
      CUSTOS_OUTBOUND_ALLOW_HOSTS: idp.hostPort,
      CUSTOS_PUBLIC_URL: PUBLIC_URL,
    });
    try {
      const send = async () =>
        other.request('POST', '/oauth/token', {
          payload: form({
            grant_type: EXCHANGE,
            subject_token: await idp.token(),
            subject_token_type: JWT_TYPE,
            audience: 'github',
          }),
          headers: {
            'content-type': 'application/x-www-form-urlencoded',
            authorization: basicAuth(basicClient),
          },
        });
      const first = await send();
      expect(first.status).toBe(200);
      expect(first.body.access_token).toBe(secrets.githubAlice);
      proxy.cut();
      const res = await send();
      expect(res.status).toBe(503);
      expect(res.body.error).toBe('temporarily_unavailable');
      expect(res.raw).not.toContain(secrets.githubAlice);
    } finally {
      proxy.restore();
      await other.close();
      await proxy.close();
    }
  });
});

describe('housekeeping', () => {
  it('prunes used client assertions once they have expired', async () => {
    await db().query(
      `INSERT INTO client_assertions_used (connector_id, jti_hash, expires_at) VALUES ($1, '\\x01', now() - interval '1 minute')`,
      [jwtClient.id],
    );
    const pruned = await app.custos.app.get(UsedAssertionsRepository).pruneExpired();
    expect(pruned).toBeGreaterThanOrEqual(1);
    const left = await db().query(
      `SELECT count(*)::int AS n FROM client_assertions_used WHERE expires_at < now()`,
    );
    expect(left[0].n).toBe(0);
  });
});
