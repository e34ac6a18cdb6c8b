/**
 * Every route of the admin API, called by every kind of principal against its own tenant, another tenant and
 * a tenant that does not exist, is compared with a model of who may do what written down here, independently
 * of the controllers' decorators. A route the model does not know fails the test, so a new route must be
 * classified before it ships. Malformed and random Authorization headers never get past authentication.
 */
import { randomUUID } from 'node:crypto';
import fc from 'fast-check';
import { startTestApp, type Reply, type TestApp } from '../support/app.js';
import { createTenant, type TenantFixture } from '../support/factories.js';

type Level =
  /** No admin key involved: probes, the token endpoint (its own client authentication). */
  | 'public'
  /** Platform admins only. */
  | 'platform'
  /** Platform admins only, on a tenant's path: a tenant's key on another tenant's path learns nothing (404). */
  | 'platform_on_tenant'
  /** Any valid admin key. */
  | 'any_key'
  /** The tenant's admins, and platform admins. */
  | 'tenant_or_platform_admin'
  /** The tenant's admins and auditors. */
  | 'tenant_read'
  /** The tenant's admins only. */
  | 'tenant_admin';

/** Who may do what: the policy, stated once. Paths are OpenAPI templates. */
const model: Record<string, Level> = {
  'GET /healthz': 'public',
  'GET /readyz': 'public',
  'POST /oauth/token': 'public',
  'GET /v1/providers': 'any_key',
  'POST /v1/tenants': 'platform',
  'GET /v1/tenants': 'platform',
  'GET /v1/tenants/{tenantId}': 'tenant_or_platform_admin',
  'PATCH /v1/tenants/{tenantId}': 'tenant_admin',
  'PUT /v1/tenants/{tenantId}/logo': 'tenant_admin',
  'POST /v1/tenants/{tenantId}/portal/sessions': 'tenant_admin',
  'DELETE /v1/tenants/{tenantId}/logo': 'tenant_admin',
  // Without `confirm` (as called here) it is refused before anything happens.
  'DELETE /v1/tenants/{tenantId}': 'platform_on_tenant',
  'POST /v1/tenants/{tenantId}/admin-keys': 'tenant_or_platform_admin',
  'GET /v1/tenants/{tenantId}/admin-keys': 'tenant_or_platform_admin',
  'DELETE /v1/tenants/{tenantId}/admin-keys/{keyId}': 'tenant_or_platform_admin',
  'GET /v1/tenants/{tenantId}/audit/events': 'tenant_read',
  'GET /v1/tenants/{tenantId}/audit/export': 'tenant_read',
  // Anyone may verify an export: the signing keys are public.
  'GET /v1/tenants/{tenantId}/audit/keys': 'public',
  'GET /v1/audit/platform/keys': 'public',
  'GET /v1/audit/platform/export': 'platform',
  'GET /v1/audit/platform/events': 'platform',
  'GET /v1/tenants/{tenantId}/key-backend': 'tenant_read',
  'PUT /v1/tenants/{tenantId}/key-backend': 'tenant_admin',
  'POST /v1/tenants/{tenantId}/key-backend/rotate': 'tenant_admin',
  'POST /v1/tenants/{tenantId}/key-backend/flush': 'tenant_admin',
  'POST /v1/tenants/{tenantId}/key-backend/migration/resume': 'tenant_admin',
  'POST /v1/tenants/{tenantId}/key-backend/migration/cancel': 'tenant_admin',
  'GET /v1/tenants/{tenantId}/providers': 'tenant_read',
  'GET /v1/tenants/{tenantId}/providers/{key}': 'tenant_read',
  'PUT /v1/tenants/{tenantId}/providers/{key}': 'tenant_admin',
  'DELETE /v1/tenants/{tenantId}/providers/{key}': 'tenant_admin',
  'PUT /v1/tenants/{tenantId}/providers/{provider}/app': 'tenant_admin',
  'GET /v1/tenants/{tenantId}/providers/{provider}/app': 'tenant_admin',
  'DELETE /v1/tenants/{tenantId}/providers/{provider}/app': 'tenant_admin',
  'PUT /v1/tenants/{tenantId}/users/{userId}/connections/{provider}': 'tenant_admin',
  'GET /v1/tenants/{tenantId}/users/{userId}/connections': 'tenant_admin',
  'DELETE /v1/tenants/{tenantId}/connections/{connectionId}': 'tenant_admin',
  'POST /v1/tenants/{tenantId}/connect/sessions': 'tenant_admin',
  'GET /v1/tenants/{tenantId}/connect/sessions/{id}': 'tenant_admin',
  'POST /v1/tenants/{tenantId}/connectors': 'tenant_admin',
  'GET /v1/tenants/{tenantId}/connectors': 'tenant_admin',
  'GET /v1/tenants/{tenantId}/connectors/{connectorId}': 'tenant_admin',
  'PATCH /v1/tenants/{tenantId}/connectors/{connectorId}': 'tenant_admin',
  'DELETE /v1/tenants/{tenantId}/connectors/{connectorId}': 'tenant_admin',
  'POST /v1/tenants/{tenantId}/connectors/{connectorId}/secret': 'tenant_admin',
  'GET /v1/tenants/{tenantId}/identity-providers': 'tenant_admin',
  'GET /v1/tenants/{tenantId}/identity-providers/{name}': 'tenant_admin',
  'PUT /v1/tenants/{tenantId}/identity-providers/{name}': 'tenant_admin',
  'DELETE /v1/tenants/{tenantId}/identity-providers/{name}': 'tenant_admin',
};

type PrincipalName =
  'none' | 'garbage' | 'platform' | 'own_admin' | 'own_auditor' | 'other_admin' | 'other_auditor';
const principals: PrincipalName[] = [
  'none',
  'garbage',
  'platform',
  'own_admin',
  'own_auditor',
  'other_admin',
  'other_auditor',
];
type Target = 'own' | 'other' | 'missing';

let app: TestApp;
let a: TenantFixture;
let b: TenantFixture;
let routes: { method: string; path: string }[];

beforeAll(async () => {
  app = await startTestApp();
  a = await createTenant(app);
  b = await createTenant(app);
  const doc = await app.request('GET', '/openapi.json');
  routes = Object.entries(doc.body.paths as Record<string, Record<string, unknown>>).flatMap(([path, ops]) =>
    Object.keys(ops).map((m) => ({ method: m.toUpperCase(), path })),
  );
});
afterAll(() => app.close());

function keyOf(p: PrincipalName): string | undefined {
  switch (p) {
    case 'none':
      return undefined;
    case 'garbage':
      return `cus_${'x'.repeat(40)}`;
    case 'platform':
      return app.bootstrapKey;
    case 'own_admin':
      return a.adminKey;
    case 'own_auditor':
      return a.auditorKey;
    case 'other_admin':
      return b.adminKey;
    case 'other_auditor':
      return b.auditorKey;
  }
}

/** What the model says, for a principal of tenant A (or the platform) calling a route on `target`. */
function expected(level: Level, p: PrincipalName, target: Target): 'allowed' | 401 | 403 | 404 {
  if (level === 'public') return 'allowed';
  if (p === 'none' || p === 'garbage') return 401;
  if (level === 'any_key') return 'allowed';
  if (level === 'platform') return p === 'platform' ? 'allowed' : 403;
  // Tenant routes: a tenant's key never learns whether another tenant (or its objects) exists.
  const ownTenant = p === 'own_admin' || p === 'own_auditor' ? 'own' : 'other';
  if (p !== 'platform' && ownTenant !== target) return 404;
  const role = p === 'platform' ? 'platform' : p.endsWith('admin') ? 'admin' : 'auditor';
  switch (level) {
    case 'platform_on_tenant':
      return role === 'platform' ? 'allowed' : 403;
    case 'tenant_or_platform_admin':
      return role === 'auditor' ? 403 : 'allowed';
    case 'tenant_read':
      return role === 'platform' ? 403 : 'allowed';
    case 'tenant_admin':
      return role === 'admin' ? 'allowed' : 403;
  }
}

/**
 * A request that an allowed principal can make without changing anything that matters: path ids that do
 * not exist, and a body every write schema refuses.
 */
function call(route: { method: string; path: string }, p: PrincipalName, target: Target): Promise<Reply> {
  const tenantId = target === 'own' ? a.tenantId : target === 'other' ? b.tenantId : randomUUID();
  const url = route.path
    .replace('{tenantId}', tenantId)
    .replace(/\{(connectionId|connectorId|keyId|id)\}/g, randomUUID())
    .replace(/\{(key|provider)\}/g, 'no-such-provider')
    .replace('{name}', 'no-such-idp')
    .replace('{userId}', 'nobody');
  const hasBody =
    ['PUT', 'PATCH'].includes(route.method) ||
    (route.method === 'POST' && !/\/(rotate|flush|secret|resume|cancel)$/.test(route.path));
  return app.request(route.method, url, {
    key: keyOf(p),
    ...(hasBody ? { body: { probeOfTheAuthorizationModel: true } } : {}),
  });
}

describe('authorization: every route against the model', () => {
  it('knows every route the API serves', () => {
    expect(routes.length).toBeGreaterThan(30);
    const unknown = routes.map((r) => `${r.method} ${r.path}`).filter((r) => !(r in model));
    expect(unknown).toEqual([]);
  });

  it('gives every principal exactly what the model says, on its own tenant, another and a missing one', async () => {
    const mismatches: string[] = [];
    for (const route of routes) {
      const level = model[`${route.method} ${route.path}`];
      if (level === 'public') continue;
      for (const p of principals) {
        for (const target of ['own', 'other', 'missing'] as Target[]) {
          if (!route.path.includes('{tenantId}') && target !== 'own') continue;
          const want = expected(level, p, target);
          const res = await call(route, p, target);
          const ok =
            want === 'allowed' ? ![401, 403].includes(res.status) && res.status < 500 : res.status === want;
          if (!ok)
            mismatches.push(
              `${route.method} ${route.path} as ${p} on ${target}: ${res.status}, want ${want}`,
            );
        }
      }
    }
    expect(mismatches).toEqual([]);
  });

  it('writes nothing for a request it refuses', async () => {
    const before: { n: number }[] = await app.custos.runtime.dataSource.query(
      `SELECT count(*)::int AS n FROM connectors WHERE tenant_id = $1`,
      [a.tenantId],
    );
    for (const p of ['none', 'garbage', 'own_auditor', 'other_admin', 'platform'] as PrincipalName[]) {
      const res = await app.request('POST', `/v1/tenants/${a.tenantId}/connectors`, {
        key: keyOf(p),
        body: {
          name: 'sneaky',
          allowedProviders: ['github'],
          delegation: 'trusted',
          auth: { method: 'client_secret_basic' },
        },
      });
      expect([401, 403, 404]).toContain(res.status);
    }
    const after: { n: number }[] = await app.custos.runtime.dataSource.query(
      `SELECT count(*)::int AS n FROM connectors WHERE tenant_id = $1`,
      [a.tenantId],
    );
    expect(after[0].n).toBe(before[0].n);
  });

  it('never lets a malformed or random Authorization header through, and never answers 5xx to one', async () => {
    const header = fc.oneof(
      fc.string({ unit: 'binary', maxLength: 200 }),
      fc.string({ maxLength: 80 }).map((s) => `Bearer ${s}`),
      fc.stringMatching(/^cus_[A-Za-z0-9_-]{0,80}$/).map((s) => `Bearer ${s}`),
      fc.constantFrom('Bearer', 'Bearer ', 'Basic abc', `Bearer ${'a'.repeat(5000)}`),
    );
    const adminRoutes = routes.map((r) => `${r.method} ${r.path}`).filter((r) => model[r] !== 'public');
    await fc.assert(
      fc.asyncProperty(fc.constantFrom(...adminRoutes), header, async (route, authorization) => {
        const [method, path] = route.split(' ');
        // Header values that Node refuses to send are not a request anyone can make.
        if (!/^[\t\x20-\x7e\x80-\xff]*$/.test(authorization)) return;
        const url = path.replace('{tenantId}', a.tenantId).replace(/\{[^}]+\}/g, 'x');
        const res = await app.request(method, url, { headers: { authorization } });
        expect(res.status).toBe(401);
      }),
      { numRuns: 300 },
    );
  });
});
