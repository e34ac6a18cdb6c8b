/**
 * Hostile input at the token endpoint (issue 12, findings 1, 6 and 7): claims of validly signed user tokens
 * holding NUL bytes or lone surrogates, malformed issuers before any lookup, bad form parameters, and
 * transport-level refusals (oversized, wrong content type, malformed bodies). Every answer is RFC 6749
 * shaped ({error, error_description}, no-store), never a 5xx, and a refusal is audited without the bad value.
 */
import { randomUUID } from 'node:crypto';
import fc from 'fast-check';
import { startTestApp, type Reply, type TestApp } from '../../support/app.js';
import {
  basicAuth,
  createConnector,
  createTenant,
  importConnection,
  trustIdentityProvider,
  type SecretConnector,
  type TenantFixture,
} from '../../support/factories.js';
import { startTestIdp, type TestIdp } from '../../support/idp.js';
import { hostileString } from '../../support/naughty-strings.js';

const EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
const JWT_TYPE = 'urn:ietf:params:oauth:token-type:jwt';
const USER_ID_TYPE = 'urn:custos:params:oauth:token-type:user-id';
const ASSERTION_TYPE = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer';
/** Every `error` the token endpoint may answer with (RFC 6749 §5.2, RFC 8693, Custos's own). */
const TOKEN_ERRORS = [
  'invalid_request',
  'invalid_client',
  'invalid_grant',
  'unauthorized_client',
  'unsupported_grant_type',
  'invalid_scope',
  'invalid_target',
  'consent_required',
  'temporarily_unavailable',
  'key_unavailable',
  'slow_down',
];

/** This file sends hundreds of refused requests from one address on purpose: no throttling, no folding. */
const UNTHROTTLED = {
  CUSTOS_RATE_LIMIT_CREDENTIAL_FAILURES: '1000000',
  CUSTOS_RATE_LIMIT_ADDRESS_FAILURES: '1000000',
  CUSTOS_AUDIT_DENIALS_PER_WINDOW: '1000000',
};

let app: TestApp;
let idp: TestIdp;
let t: TenantFixture;
let basic: SecretConnector;
let trusted: SecretConnector;

function form(params: Record<string, string | undefined>): string {
  const sp = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined) sp.append(k, v);
  return sp.toString();
}

const post = (payload: string, headers: Record<string, string> = {}) =>
  app.request('POST', '/oauth/token', {
    payload,
    headers: { 'content-type': 'application/x-www-form-urlencoded', ...headers },
  });

const exchange = (subjectToken: string, extra: Record<string, string | undefined> = {}) =>
  post(
    form({
      grant_type: EXCHANGE,
      subject_token: subjectToken,
      subject_token_type: JWT_TYPE,
      audience: 'github',
      ...extra,
    }),
    { authorization: basicAuth(basic) },
  );

/** The RFC 6749 error shape: {error, error_description}, never cached, never the admin API's shape. */
function expectOAuthError(res: Reply, status: number, error: string): void {
  expect({ status: res.status, error: res.body?.error }).toEqual({ status, error });
  expect(typeof res.body.error_description).toBe('string');
  expect(res.body).not.toHaveProperty('message');
  expect(res.body).not.toHaveProperty('requestId');
  expect(res.headers['cache-control']).toBe('no-store');
}

const lastEvent = async () =>
  (
    await app.custos.runtime.dataSource.query(
      `SELECT * FROM audit_events WHERE tenant_id = $1 AND action = 'token.exchange' ORDER BY id DESC LIMIT 1`,
      [t.tenantId],
    )
  )[0];

/** A JWT whose signature is garbage: only its unverified header and payload are read before refusal. */
const unsigned = (payload: Record<string, unknown>) =>
  [
    Buffer.from(JSON.stringify({ alg: 'ES256', kid: 'k' })).toString('base64url'),
    Buffer.from(JSON.stringify(payload)).toString('base64url'),
    'c2ln',
  ].join('.');

beforeAll(async () => {
  idp = await startTestIdp();
  app = await startTestApp({ CUSTOS_OUTBOUND_ALLOW_HOSTS: idp.hostPort, ...UNTHROTTLED });
  t = await createTenant(app);
  await trustIdentityProvider(app, t, idp);
  basic = await createConnector(app, t, { name: 'c-user_token', delegation: 'user_token' });
  trusted = await createConnector(app, t, { name: 'c-trusted', delegation: 'trusted' });
  await importConnection(app, t, 'alice', 'github', {
    type: 'oauth2',
    accessToken: `gho_${randomUUID()}`,
    scopes: ['repo'],
  });
});

afterAll(async () => {
  await app.close();
  await idp.close();
});

describe('claims of a validly signed user token (finding 1, at the edge)', () => {
  it.each([
    ['azp with a NUL byte', { azp: 'agent\u0000x' }],
    ['azp with a lone high surrogate', { azp: 'agent\ud800' }],
    ['azp with a lone low surrogate', { azp: '\udc00agent' }],
    ['azp with a line break', { azp: 'agent\r\nx' }],
    ['client_id (no azp) with a NUL byte', { client_id: 'agent\u0000x' }],
    ['azp longer than 255 characters', { azp: 'a'.repeat(256) }],
  ])('%s: 400 invalid_grant, audited as subject_token_invalid_azp without the value', async (_l, claims) => {
    const res = await exchange(await idp.token(claims));
    expectOAuthError(res, 400, 'invalid_grant');
    const ev = await lastEvent();
    expect(ev).toMatchObject({ outcome: 'denied' });
    expect(ev.details).toMatchObject({ reason: 'subject_token_invalid_azp', error: 'invalid_grant' });
    expect(ev.details).not.toHaveProperty('agentClientId');
    expect(JSON.stringify(ev)).not.toContain('agent');
  });

  it.each([
    ['sub with a NUL byte', { sub: 'ali\u0000ce' }],
    ['sub with a lone surrogate', { sub: 'ali\ud800ce' }],
  ])('%s: 400 invalid_grant (no_user)', async (_l, claims) => {
    const res = await exchange(await idp.token(claims));
    expectOAuthError(res, 400, 'invalid_grant');
    expect((await lastEvent()).details).toMatchObject({ reason: 'subject_token_no_user' });
  });

  it('still releases the token for a clean azp, recording it', async () => {
    const res = await exchange(await idp.token({ azp: 'claude-desktop 🚀' }));
    expect(res.status).toBe(200);
    expect((await lastEvent()).details).toMatchObject({ agentClientId: 'claude-desktop 🚀' });
  });
});

describe('an unverified iss is checked before any lookup (finding 6)', () => {
  it.each([
    ['a NUL byte', 'https://idp.example/\u0000'],
    ['a lone surrogate', 'https://idp.example/\ud800'],
    ['a line break', 'https://idp.example/\n'],
  ])('iss with %s: 400 invalid_grant, audited as subject_token_malformed_issuer', async (_l, iss) => {
    const res = await exchange(unsigned({ iss, sub: 'alice', exp: Math.floor(Date.now() / 1000) + 60 }));
    expectOAuthError(res, 400, 'invalid_grant');
    expect((await lastEvent()).details).toMatchObject({ reason: 'subject_token_malformed_issuer' });
  });
});

describe('form parameters pass the shared string rule (finding 6)', () => {
  it('audience with a NUL byte: 400 invalid_request, not 503, audited without the value', async () => {
    const res = await exchange(await idp.token(), { audience: 'git\u0000hub' });
    expectOAuthError(res, 400, 'invalid_request');
    expect((await lastEvent()) ?? {}).not.toMatchObject({ details: { audience: expect.anything() } });
    const [ev] = await app.custos.runtime.dataSource.query(
      `SELECT * FROM audit_events WHERE action = 'token.exchange' ORDER BY id DESC LIMIT 1`,
    );
    expect(ev.details).toMatchObject({ reason: 'malformed_parameter', error: 'invalid_request' });
    expect(JSON.stringify(ev.details)).not.toContain('git');
  });

  it('an audience that is not a provider key: 400 invalid_target, not looked up nor recorded', async () => {
    const res = await exchange(await idp.token(), { audience: '../Git Hub/%2e' });
    expectOAuthError(res, 400, 'invalid_target');
    const ev = await lastEvent();
    expect(ev.details).toMatchObject({ reason: 'malformed_audience' });
    expect(ev.details).not.toHaveProperty('audience');
  });

  it.each(['grant_type', 'scope', 'subject_token_type', 'requested_token_type', 'client_id', 'resource'])(
    '%s with a NUL byte or a control character: 400 invalid_request, audited as malformed_parameter',
    async (name) => {
      // (A lone surrogate cannot be form-encoded: UTF-8 has no bytes for it.)
      for (const bad of ['x\u0000y', 'x\r\ny', 'x\u0085y']) {
        const res = await exchange(await idp.token(), { [name]: bad });
        expectOAuthError(res, 400, 'invalid_request');
        const [ev] = await app.custos.runtime.dataSource.query(
          `SELECT details FROM audit_events WHERE action = 'token.exchange' ORDER BY id DESC LIMIT 1`,
        );
        expect(ev.details).toMatchObject({ reason: 'malformed_parameter' });
      }
    },
  );

  it('a trusted connector’s user id with a NUL byte: 400 invalid_request', async () => {
    const res = await post(
      form({
        grant_type: EXCHANGE,
        subject_token: 'ali\u0000ce',
        subject_token_type: USER_ID_TYPE,
        audience: 'github',
      }),
      { authorization: basicAuth(trusted) },
    );
    expectOAuthError(res, 400, 'invalid_request');
  });

  it('a client id with a NUL byte, in HTTP Basic or in a client assertion: 401 invalid_client', async () => {
    const viaBasic = await post(form({ grant_type: EXCHANGE }), {
      authorization: basicAuth({ clientId: 'cl\u0000ient', clientSecret: 'x' }),
    });
    expectOAuthError(viaBasic, 401, 'invalid_client');
    const viaAssertion = await post(
      form({
        grant_type: EXCHANGE,
        client_assertion_type: ASSERTION_TYPE,
        client_assertion: unsigned({ iss: 'cl\u0000ient', sub: 'x' }),
      }),
    );
    expectOAuthError(viaAssertion, 401, 'invalid_client');
  });
});

describe('transport-level refusals answer in RFC 6749 form (finding 7)', () => {
  it('an oversized body: 413 {error: invalid_request}', async () => {
    const res = await post(form({ grant_type: EXCHANGE, subject_token: 'x'.repeat(70_000) }));
    expectOAuthError(res, 413, 'invalid_request');
  });

  it('a content type with no parser: 400 invalid_request (as for a JSON body)', async () => {
    for (const type of ['text/plain', 'application/xml', 'multipart/form-data; boundary=x']) {
      const res = await post('grant_type=x', { 'content-type': type });
      expectOAuthError(res, 400, 'invalid_request');
    }
    const json = await post('{"grant_type":"x"}', { 'content-type': 'application/json' });
    expectOAuthError(json, 400, 'invalid_request');
  });

  it('malformed JSON, a too-deep JSON body and a NUL in the query string: 400 invalid_request', async () => {
    expectOAuthError(
      await post('{"grant_type": ', { 'content-type': 'application/json' }),
      400,
      'invalid_request',
    );
    const deep = `{"a":${'['.repeat(5000)}${']'.repeat(5000)}}`;
    expectOAuthError(await post(deep, { 'content-type': 'application/json' }), 400, 'invalid_request');
    const res = await app.request('POST', '/oauth/token?x=%00', {
      payload: 'grant_type=x',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
    });
    expectOAuthError(res, 400, 'invalid_request');
  });

  it('invalid UTF-8 in a form body: an RFC 6749 answer, not a 5xx', async () => {
    const fastify = app.custos.app.getHttpAdapter().getInstance();
    const res = await fastify.inject({
      method: 'POST',
      url: '/oauth/token',
      headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: basicAuth(basic) },
      payload: Buffer.concat([
        Buffer.from('grant_type='),
        Buffer.from([0xff, 0xc0, 0x80]),
        Buffer.from('&audience=%ED%A0%80'),
      ]),
    });
    expect(res.statusCode).toBeLessThan(500);
    expect(TOKEN_ERRORS).toContain(res.json().error);
  });
});

describe('properties', () => {
  const nasty = hostileString;
  const params = [
    'grant_type',
    'subject_token',
    'subject_token_type',
    'audience',
    'scope',
    'requested_token_type',
    'client_id',
    'client_assertion',
    'client_assertion_type',
    'actor_token',
    'resource',
  ];

  it('no input makes the token endpoint answer 5xx or leave RFC 6749 form', async () => {
    const token = await idp.token();
    await fc.assert(
      fc.asyncProperty(
        fc.dictionary(fc.constantFrom(...params), nasty, { maxKeys: 4 }),
        fc.boolean(),
        async (overrides, authenticate) => {
          const res = await post(
            form({
              grant_type: EXCHANGE,
              subject_token: token,
              subject_token_type: JWT_TYPE,
              audience: 'github',
              ...overrides,
            }),
            authenticate ? { authorization: basicAuth(basic) } : {},
          );
          expect(res.status).toBeLessThan(500);
          if (res.status >= 400) {
            expect(TOKEN_ERRORS).toContain(res.body.error);
            expect(typeof res.body.error_description).toBe('string');
          }
          expect(res.headers['cache-control']).toBe('no-store');
        },
      ),
      { numRuns: 150 },
    );
  });

  it('every claim of a signed user token may be hostile without a 5xx', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.record(
          { sub: nasty, azp: nasty, client_id: nasty, iss: fc.oneof(fc.constant(idp.issuer), nasty) },
          { requiredKeys: [] },
        ),
        async (claims) => {
          const res = await exchange(await idp.token(claims));
          expect(res.status).toBeLessThan(500);
          if (res.status >= 400) expect(TOKEN_ERRORS).toContain(res.body.error);
        },
      ),
      { numRuns: 80 },
    );
  });
});
