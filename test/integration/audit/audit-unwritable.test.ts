/** When the audit trail cannot be written, admin writes fail closed with 503 and leave nothing behind. */
import { startTestApp, type TestApp } from '../../support/app.js';
import { createTenant, type TenantFixture } from '../../support/factories.js';

let app: TestApp;
let t: TenantFixture;

const db = () => app.custos.runtime.dataSource;

beforeAll(async () => {
  app = await startTestApp();
  t = await createTenant(app);
});
afterAll(() => app.close());

/** Every new audit row is refused by the database while `fn` runs (rows already there stay valid). */
async function withAuditRefused<T>(fn: () => Promise<T>): Promise<T> {
  await db().query('ALTER TABLE audit_events ADD CONSTRAINT test_audit_refused CHECK (id IS NULL) NOT VALID');
  try {
    return await fn();
  } finally {
    await db().query('ALTER TABLE audit_events DROP CONSTRAINT test_audit_refused');
  }
}

const count = async (sql: string, params: unknown[] = []) =>
  Number((await db().query(`SELECT count(*)::int AS n FROM ${sql}`, params))[0].n);

describe('admin writes when the audit trail cannot be written', () => {
  it('answers 503 with Retry-After and creates no tenant', async () => {
    const before = await count('tenants');
    const res = await withAuditRefused(() =>
      app.request('POST', '/v1/tenants', { key: app.bootstrapKey, body: { name: 'no-trail' } }),
    );
    expect(res.status).toBe(503);
    expect(res.headers['retry-after']).toBeDefined();
    expect(res.body).toEqual({
      error: 'temporarily_unavailable',
      message: expect.stringContaining('audit'),
      requestId: expect.any(String),
    });
    expect(await count('tenants')).toBe(before);
  });

  it('stores no credential, no connector and no admin key without its event', async () => {
    const user = 'nobody@example.com';
    const [credential, connector, key] = await withAuditRefused(async () => [
      await app.request(
        'PUT',
        `/v1/tenants/${t.tenantId}/users/${encodeURIComponent(user)}/connections/openai`,
        { key: t.adminKey, body: { type: 'api_key', apiKey: 'sk-never-stored' } },
      ),
      await app.request('POST', `/v1/tenants/${t.tenantId}/connectors`, {
        key: t.adminKey,
        body: {
          name: 'no-trail',
          allowedProviders: ['openai'],
          delegation: 'trusted',
          auth: { method: 'client_secret_basic' },
        },
      }),
      await app.request('POST', `/v1/tenants/${t.tenantId}/admin-keys`, {
        key: t.adminKey,
        body: { name: 'no-trail', role: 'auditor' },
      }),
    ]);
    for (const res of [credential, connector, key]) {
      expect(res.status).toBe(503);
      expect(res.body.error).toBe('temporarily_unavailable');
    }
    expect(await count('connections WHERE tenant_id = $1 AND user_id = $2', [t.tenantId, user])).toBe(0);
    expect(await count(`connectors WHERE tenant_id = $1 AND name = 'no-trail'`, [t.tenantId])).toBe(0);
    expect(await count(`admin_keys WHERE tenant_id = $1 AND name = 'no-trail'`, [t.tenantId])).toBe(0);
  });

  it('works again once the trail can be written', async () => {
    const res = await app.request('POST', '/v1/tenants', { key: app.bootstrapKey, body: { name: 'trail' } });
    expect(res.status).toBe(201);
  });
});
