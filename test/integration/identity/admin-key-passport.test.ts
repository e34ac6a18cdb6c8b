/**
 * Admin keys are authenticated by passport: the `admin-key` strategy (passport-http-bearer) is what turns a
 * key into the principal a route sees, through AdminKeysService, and nothing else does. Passport is shown the
 * Authorization header only (never an `access_token` in the query string or body), its failures are answered
 * with Custos's own 401, and an open route (the token endpoint, the probes) never reaches passport or the key
 * store. The strategy's name follows the newest running app when several run in one process.
 */
import { randomUUID } from 'node:crypto';
import { type ExecutionContext } from '@nestjs/common';
import { Reflector } from '@nestjs/core';
import passport from 'passport';
import { Strategy as BearerStrategy } from 'passport-http-bearer';
import type { AdminPrincipal } from '../../../src/common/admin-access.js';
import { AccessGuard } from '../../../src/identity/access.guard.js';
import type { AdminAccessGuard } from '../../../src/identity/admin-access.guard.js';
import type { AdminKeyAuthGuard } from '../../../src/identity/admin-auth.guard.js';
import { ADMIN_KEY_STRATEGY, AdminKeyStrategy } from '../../../src/identity/admin-key.strategy.js';
import { AdminKeysService } from '../../../src/identity/admin-keys.service.js';
import type { ConnectorAuthGuard } from '../../../src/identity/connector-auth.guard.js';
import { startTestApp, type TestApp } from '../../support/app.js';
import {
  basicAuth,
  createConnector,
  createTenant,
  saveProviderApp,
  type SecretConnector,
  type TenantFixture,
} from '../../support/factories.js';

/** Passport's registry, which @types/passport does not describe. */
const registered = (name: string): unknown =>
  (passport as unknown as { _strategy(n: string): unknown })._strategy(name);

let app: TestApp;
let t: TenantFixture;
let connector: SecretConnector;
let strategy: AdminKeyStrategy;
let lookup: jest.SpyInstance;
let validate: jest.SpyInstance;
let authenticate: jest.SpyInstance;

beforeAll(async () => {
  app = await startTestApp();
  t = await createTenant(app);
  await saveProviderApp(app, t, 'github', { client_id: 'gh-app', client_secret: 'gh-app-secret' });
  connector = await createConnector(app, t);
  strategy = app.custos.app.get(AdminKeyStrategy);
});
afterAll(() => app.close());

beforeEach(() => {
  lookup = jest.spyOn(app.custos.app.get(AdminKeysService), 'authenticate');
  validate = jest.spyOn(strategy, 'validate');
  authenticate = jest.spyOn(passport, 'authenticate');
});
afterEach(() => jest.restoreAllMocks());

const strategyCalls = () => authenticate.mock.calls.map((c: unknown[]) => c[0]);

describe('the admin-key strategy', () => {
  it('is registered with passport under its name, as a bearer strategy', () => {
    expect(registered(ADMIN_KEY_STRATEGY)).toBe(strategy);
    expect(strategy).toBeInstanceOf(BearerStrategy);
  });

  it('authenticates a valid key through passport, the strategy and AdminKeysService', async () => {
    const res = await app.request('GET', '/v1/providers', { key: t.auditorKey });
    expect(res.status).toBe(200);
    expect(strategyCalls()).toEqual([ADMIN_KEY_STRATEGY]);
    expect(validate).toHaveBeenCalledTimes(1);
    expect(validate).toHaveBeenCalledWith(t.auditorKey, expect.any(Function));
    expect(lookup).toHaveBeenCalledTimes(1);
    expect(lookup).toHaveBeenCalledWith(t.auditorKey);
  });

  it('gives the route exactly the principal the strategy returned', async () => {
    // Not a key AdminKeysService knows: only the strategy's answer can let this request through.
    const keyId = randomUUID();
    const made: AdminPrincipal = { keyId, tenantId: null, role: 'platform_admin', name: 'from-the-strategy' };
    validate.mockResolvedValueOnce(made);
    const res = await app.request('POST', '/v1/tenants', {
      key: `cus_${'q'.repeat(43)}`,
      body: { name: `t-${randomUUID()}` },
    });
    expect(res.status).toBe(201);
    expect(lookup).not.toHaveBeenCalled();
    const rows: { actor_type: string; actor_id: string }[] = await app.custos.runtime.dataSource.query(
      `SELECT actor_type, actor_id FROM audit_events WHERE action = 'tenant.created' AND tenant_id = $1`,
      [res.body.id],
    );
    expect(rows).toEqual([{ actor_type: 'admin_key', actor_id: keyId }]);
  });

  it('is the only way in: without it registered, no key gets through', async () => {
    passport.unuse(ADMIN_KEY_STRATEGY);
    try {
      const res = await app.request('GET', '/v1/providers', { key: app.bootstrapKey });
      expect(res.status).toBe(500);
      expect(lookup).not.toHaveBeenCalled();
    } finally {
      passport.use(ADMIN_KEY_STRATEGY, strategy);
    }
    expect((await app.request('GET', '/v1/providers', { key: app.bootstrapKey })).status).toBe(200);
  });

  it('answers a wrong key with Custos’s 401 after one lookup, and a missing one without any', async () => {
    const wrong = await app.request('GET', '/v1/providers', { key: `cus_${'w'.repeat(43)}` });
    expect(wrong.status).toBe(401);
    expect(wrong.body).toEqual({
      error: 'unauthenticated',
      message: 'A valid admin API key is required (Authorization: Bearer <key>)',
      requestId: expect.any(String),
    });
    expect(wrong.headers['www-authenticate']).toBeUndefined();
    expect(lookup).toHaveBeenCalledTimes(1);
    await expect(validate.mock.results[0].value).resolves.toBe(false);

    lookup.mockClear();
    const missing = await app.request('GET', '/v1/providers', { headers: { authorization: 'Basic abc' } });
    expect(missing.status).toBe(401);
    expect(missing.body.error).toBe('unauthenticated');
    expect(missing.headers['www-authenticate']).toBeUndefined();
    expect(lookup).not.toHaveBeenCalled();
  });

  it('takes a key from the Authorization header only, never from the query string or body', async () => {
    const before: { id: string }[] = await app.custos.runtime.dataSource.query(
      `SELECT coalesce(max(id), 0)::text AS id FROM audit_events`,
    );
    const inQuery = await app.request('GET', `/v1/providers?access_token=${app.bootstrapKey}`);
    expect(inQuery.status).toBe(401);
    const inBody = await app.request('POST', '/v1/tenants', {
      body: { name: 'sneaky', access_token: app.bootstrapKey },
    });
    expect(inBody.status).toBe(401);
    expect(lookup).not.toHaveBeenCalled();
    const denied: { reason: string }[] = await app.custos.runtime.dataSource.query(
      `SELECT details->>'reason' AS reason FROM audit_events WHERE id > $1 AND action = 'access.denied' ORDER BY id`,
      [before[0].id],
    );
    expect(denied).toEqual([{ reason: 'missing_key' }, { reason: 'missing_key' }]);

    // A valid header is not spoiled by an access_token elsewhere (the bearer strategy alone would refuse both).
    const both = await app.request('GET', '/v1/providers?access_token=whatever', { key: app.bootstrapKey });
    expect(both.status).toBe(200);
  });
});

describe('routes that accept connectors', () => {
  const sessions = () => `/v1/tenants/${t.tenantId}/connect/sessions`;
  const body = { userId: 'alice@example.com', provider: 'github' };

  it('authenticate an admin key through the same strategy', async () => {
    const res = await app.request('POST', sessions(), { key: t.adminKey, body });
    expect(res.status).toBe(201);
    expect(strategyCalls()).toEqual([ADMIN_KEY_STRATEGY]);
    expect(lookup).toHaveBeenCalledWith(t.adminKey);
  });

  it('leave a connector’s own credentials to connector authentication', async () => {
    const res = await app.request('POST', sessions(), {
      headers: { authorization: basicAuth(connector) },
      body,
    });
    expect(res.status).toBe(201);
    expect(authenticate).not.toHaveBeenCalled();
    expect(lookup).not.toHaveBeenCalled();
  });
});

describe('open routes', () => {
  it('never reach passport or the key store, even with an admin key in the header', async () => {
    const health = await app.request('GET', '/healthz', { key: app.bootstrapKey });
    expect(health.status).toBe(200);
    const token = await app.request('POST', '/oauth/token', {
      key: app.bootstrapKey,
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      payload: 'grant_type=client_credentials',
    });
    expect(token.status).toBeGreaterThanOrEqual(400);
    expect(token.status).toBeLessThan(500);
    expect(authenticate).not.toHaveBeenCalled();
    expect(validate).not.toHaveBeenCalled();
    expect(lookup).not.toHaveBeenCalled();
  });

  it('are let through by the access guard synchronously, from metadata alone', () => {
    const never = (name: string) => {
      const fail = () => {
        throw new Error(`${name} called for an open route`);
      };
      return { canActivate: fail, authorize: fail };
    };
    const guard = new AccessGuard(
      new Reflector(),
      never('authentication') as unknown as AdminKeyAuthGuard,
      never('authorization') as unknown as AdminAccessGuard,
      never('connector authentication') as unknown as ConnectorAuthGuard,
    );
    class Probe {
      healthz() {}
    }
    const context = {
      getHandler: () => Probe.prototype.healthz,
      getClass: () => Probe,
      switchToHttp: () => {
        throw new Error('an open route needs no request');
      },
    } as unknown as ExecutionContext;
    expect(guard.canActivate(context)).toBe(true);
  });
});

describe('several apps in one process', () => {
  it('lends the strategy’s name to the newest running app, and gives it back when that app closes', async () => {
    // Same database, same bootstrap key (another one would revoke this app's).
    const other = await startTestApp({ CUSTOS_BOOTSTRAP_ADMIN_KEY: app.bootstrapKey });
    try {
      expect(registered(ADMIN_KEY_STRATEGY)).toBe(other.custos.app.get(AdminKeyStrategy));
    } finally {
      await other.close();
    }
    expect(registered(ADMIN_KEY_STRATEGY)).toBe(strategy);
    // The closed app's database is never asked.
    const res = await app.request('GET', '/v1/providers', { key: app.bootstrapKey });
    expect(res.status).toBe(200);
    expect(lookup).toHaveBeenCalledTimes(1);
  });
});
